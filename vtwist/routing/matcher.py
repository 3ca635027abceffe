"""V2Ray ``routing``: field rules and their matching (sans-IO: no reactor, no resolver, no config).

A :class:`Router` holds the rules of a config's ``routing`` section and picks an outbound tag
for a :class:`RouteContext` (target, inbound tag, source, user). First matching rule wins;
no match gives ``None`` (the dispatcher's default outbound). Rules are built from the JSON by
:mod:`vtwist.routing.parse`; the compiled matchers they hold (IP ranges, domain sets, regexps)
are runtime state built once per config.

Name resolution stays outside: when a rule with an ``ip`` condition must see the IPs of a
domain target (``IPOnDemand``, or ``IPIfNonMatch`` after a first pass matched nothing),
:meth:`Router.route` answers :class:`NeedIPs`; the caller resolves the domain and asks
again with ``RouteContext.resolved`` set (an empty tuple when resolution failed, as V2Ray
then lets IP conditions fail). With ``AsIs``, IP conditions see IP-literal targets only.

A rule leads to an outbound tag or to a balancer, which picks one of the outbounds its
selector matches at that moment. ``protocol`` conditions look at what sniffing recognised
(``RouteContext.protocol``). Geo data lists (:mod:`vtwist.routing.geodata`) arrive as shared
:class:`IPSet` / :class:`DomainMatcher` objects that rules include by reference.

Differences from V2Ray 4.34, on purpose: ``domain``/``full:``/``keyword:`` compare
case-insensitively (DNS names are) and ``regexp:`` uses Python's ``re`` (RE2 patterns mostly
work the same); an IP set may hold negated lists (``geoip:!CC``, which 4.34 lacks).
"""

from __future__ import annotations

import bisect
import ipaddress
import random
import re
from array import array
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace

from vtwist.address import parse_ip

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# domainStrategy values (vtwist.routing.parse maps V2Ray's spellings onto these).
AS_IS = "AsIs"
IP_IF_NON_MATCH = "IPIfNonMatch"
IP_ON_DEMAND = "IPOnDemand"

# geoip:private: IANA special-purpose ranges (RFC 6890 and updates) plus multicast, i.e.
# the addresses that never belong to a country, as in V2Ray's geoip.dat "private" list.
PRIVATE_NETWORKS: tuple[str, ...] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128", "::1/128", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "ff00::/8",
)


# -- values ---------------------------------------------------------------------------------
def ip_of(host: str) -> IPAddress | None:
    """An IP literal as an address (IPv4-mapped IPv6 as IPv4), or None for a domain."""
    if not host or (":" not in host and not host[-1].isdigit()):
        return None  # an IPv4 literal ends in a digit, an IPv6 one has a colon: a domain
    ip = parse_ip(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def split_source(source: str) -> tuple[IPAddress | None, int]:
    """``"1.2.3.4:5"``, ``"[::1]:5"`` or ``"::1:5"`` -> (IP or None, port or 0)."""
    host, sep, port = source.rpartition(":")
    if not sep:
        return ip_of(source), 0
    ip = ip_of(host)
    if ip is None:
        return ip_of(source), 0
    return ip, int(port) if port.isdigit() and int(port) <= 65535 else 0


@dataclass(frozen=True, slots=True)
class RouteContext:
    """What a routing decision looks at.

    ``host`` is the target (domain or IP literal); ``resolved`` the domain's IPs once looked
    up (None: not looked up yet).
    """

    network: str
    host: str
    port: int
    inbound_tag: str = ""
    source_ip: IPAddress | None = None
    source_port: int = 0
    user: str = ""
    resolved: tuple[IPAddress, ...] | None = None
    #: what sniffing recognised (``http1``, ``tls``, ``bittorrent``; "" when not sniffed)
    protocol: str = ""
    target_ip: IPAddress | None = field(init=False, default=None)
    """The target as an IP when it is an IP literal (parsed once)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_ip", ip_of(self.host))

    def with_resolved(self, ips: Iterable[str | IPAddress]) -> RouteContext:
        """The same context with the target domain's IPs (unparseable ones dropped)."""
        out: list[IPAddress] = []
        for ip in ips:
            parsed = ip if not isinstance(ip, str) else ip_of(ip)
            if parsed is not None:
                out.append(parsed)
        return replace(self, resolved=tuple(out))


class IPSet:
    """A set of IP ranges with O(log n) membership (per family, merged, sorted arrays).

    IPv4 ranges are two ``array('I')`` (8 bytes a range), IPv6 two lists of ints. An IPSet
    may also take in other sets (``include``, shared: a geoip list several rules name is
    held once) and negated ones (``exclude_not``: ``geoip:!cn`` holds every address that is
    not in ``cn``).
    """

    __slots__ = ("_v4s", "_v4e", "_v6s", "_v6e", "groups", "negated", "__weakref__")

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for net in networks:
            pair = (int(net.network_address), int(net.broadcast_address))
            (v4 if net.version == 4 else v6).append(pair)
        self._set_ranges(v4, v6)
        self.groups: list[IPSet] = []
        self.negated: list[IPSet] = []

    @classmethod
    def from_ranges(cls, v4: list[tuple[int, int]], v6: list[tuple[int, int]]) -> IPSet:
        """A set from (first, last) integer ranges per family (any order, may overlap)."""
        ips = cls()
        ips._set_ranges(v4, v6)
        return ips

    @classmethod
    def from_cidrs(cls, v4: list[int], v6: list[int]) -> IPSet:
        """A set from packed CIDRs, ``first_address << 8 | host_bits`` (any order)."""
        ips = cls()
        s4, e4 = _merged_packed(v4)
        ips._v4s, ips._v4e = array("I", s4), array("I", e4)
        ips._v6s, ips._v6e = _merged_packed(v6)
        return ips

    def _set_ranges(self, v4: list[tuple[int, int]], v6: list[tuple[int, int]]) -> None:
        s4, e4 = _merged(v4)
        self._v4s, self._v4e = array("I", s4), array("I", e4)
        self._v6s, self._v6e = _merged(v6)

    def include(self, other: IPSet) -> None:
        """Also hold every address of ``other`` (kept by reference)."""
        self.groups.append(other)

    def include_not(self, other: IPSet) -> None:
        """Also hold every address that is NOT in ``other`` (``geoip:!CC``)."""
        self.negated.append(other)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return self._has(ip.version, int(ip))

    def _has(self, version: int, n: int) -> bool:
        if version == 4:
            starts, ends = self._v4s, self._v4e
        else:
            starts, ends = self._v6s, self._v6e  # type: ignore[assignment]
        if starts:
            i = bisect.bisect_right(starts, n) - 1
            if i >= 0 and n <= ends[i]:
                return True
        for group in self.groups:
            if group._has(version, n):
                return True
        return any(not neg._has(version, n) for neg in self.negated)

    def __len__(self) -> int:
        """How many merged ranges the set holds itself (not its included sets)."""
        return len(self._v4s) + len(self._v6s)

    def __bool__(self) -> bool:
        return bool(self._v4s or self._v6s or self.groups or self.negated)


def _merged(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Sorted, merged (first, last) ranges as two lists: starts and ends."""
    starts: list[int] = []
    ends: list[int] = []
    ranges.sort()
    for lo, hi in ranges:
        if ends and lo <= ends[-1] + 1:
            if hi > ends[-1]:
                ends[-1] = hi
        else:
            starts.append(lo)
            ends.append(hi)
    return starts, ends


def _merged_packed(packed: list[int]) -> tuple[list[int], list[int]]:
    """:func:`_merged` for packed CIDRs (``first << 8 | host_bits``): sorting plain ints is
    several times faster than sorting pairs."""
    starts: list[int] = []
    ends: list[int] = []
    packed.sort()
    last = -2
    for key in packed:
        lo = key >> 8
        hi = lo + (1 << (key & 0xFF)) - 1
        if lo <= last + 1:
            if hi > last:
                ends[-1] = last = hi
        else:
            starts.append(lo)
            ends.append(hi)
            last = hi
    return starts, ends


PRIVATE = IPSet(ipaddress.ip_network(n) for n in PRIVATE_NETWORKS)


class DomainMatcher:
    """V2Ray's domain list: plain/keyword (substring), ``domain:``, ``full:``, ``regexp:``.

    A matcher may take in others (``include``): a geosite list several rules name is built
    once and shared. :meth:`freeze` makes matching cheap whatever the list's size: a regexp
    that needs a literal run (``.ads.`` in ``^[a-z]+\\.ads\\.com$``) runs only when the
    domain holds it; the other regexps anchored with ``^`` are joined into one pattern tried
    at the start only, the rest into one searched pattern; and a long keyword list is indexed
    by the keywords' first two characters, so a domain costs one lookup per position.
    """

    __slots__ = ("full", "suffixes", "keywords", "regexps", "groups", "_joined",
                 "_anchored", "_filtered", "_prepared", "_kw_heads", "_kw_short", "__weakref__")

    def __init__(self) -> None:
        self.full: set[str] = set()
        self.suffixes: set[str] = set()
        self.keywords: list[str] = []
        self.regexps: list[re.Pattern[str]] = []
        self.groups: list[DomainMatcher] = []
        self._joined: re.Pattern[str] | None = None
        self._anchored: re.Pattern[str] | None = None
        self._filtered: tuple[tuple[str, re.Pattern[str]], ...] = ()
        #: the regexps are in _filtered / _anchored / _joined (else: tried one by one)
        self._prepared = False
        self._kw_heads: dict[str, tuple[str, ...]] | None = None
        self._kw_short: tuple[str, ...] = ()

    def add(self, kind: str, value: str) -> None:
        """Add one pattern; ``kind`` is full, domain, keyword or regexp (compiled here)."""
        if kind == "full":
            self.full.add(value.lower())
        elif kind == "domain":
            self.suffixes.add(value.lower())
        elif kind == "keyword":
            self.keywords.append(value.lower())
        elif kind == "regexp":
            self.regexps.append(re.compile(value))
            self._prepared = False
        else:
            raise ValueError(f"unknown domain pattern kind {kind!r}")

    def include(self, other: DomainMatcher) -> None:
        """Also match what ``other`` matches (kept by reference)."""
        self.groups.append(other)

    def freeze(self) -> None:
        """Prepare for fast matching (call once the matcher is complete; adding after it
        is allowed but undoes the regexp part)."""
        self._joined = self._anchored = None
        self._filtered = ()
        self._prepared = False
        if len(self.regexps) > 1:
            filtered = [(_required_literal(r), r) for r in self.regexps]
            self._filtered = tuple((lit, r) for lit, r in filtered if lit)
            rest = [r for lit, r in filtered if not lit]
            anchored = [r.pattern[1:] for r in rest if _anchored(r)]
            floating = [r.pattern for r in rest if not _anchored(r)]
            try:
                if anchored:
                    self._anchored = re.compile("|".join(f"(?:{p})" for p in anchored))
                if floating:
                    self._joined = re.compile("|".join(f"(?:{p})" for p in floating))
                self._prepared = True
            except re.error:
                self._joined = self._anchored = None
                self._filtered = ()
        self.keywords = list(dict.fromkeys(self.keywords))
        self._kw_heads = None
        if len(self.keywords) > _KEYWORD_LOOP:
            heads: dict[str, list[str]] = {}
            for keyword in self.keywords:
                if len(keyword) >= 2:
                    heads.setdefault(keyword[:2], []).append(keyword)
            self._kw_heads = {head: tuple(kws) for head, kws in heads.items()}
            self._kw_short = tuple(k for k in self.keywords if len(k) < 2)

    def __len__(self) -> int:
        """How many patterns the matcher holds itself (not its included matchers)."""
        return len(self.full) + len(self.suffixes) + len(self.keywords) + len(self.regexps)

    def __bool__(self) -> bool:
        return bool(self.full or self.suffixes or self.keywords or self.regexps
                    or any(self.groups))

    def match(self, domain: str) -> bool:
        """True when ``domain`` matches any pattern."""
        return self._match(domain, domain.lower())

    def _match(self, domain: str, lower: str) -> bool:
        if lower in self.full:
            return True
        suffixes = self.suffixes
        if suffixes:
            if lower in suffixes:
                return True
            dot = lower.find(".")
            while dot >= 0:
                if lower[dot + 1:] in suffixes:
                    return True
                dot = lower.find(".", dot + 1)
        kw_heads = self._kw_heads
        if kw_heads is not None:
            for i in range(len(lower) - 1):
                candidates = kw_heads.get(lower[i:i + 2])
                if candidates is not None:
                    for keyword in candidates:
                        if lower.startswith(keyword, i):
                            return True
            for keyword in self._kw_short:
                if keyword in lower:
                    return True
        else:
            for keyword in self.keywords:
                if keyword in lower:
                    return True
        if self._prepared:
            for literal, regexp in self._filtered:
                if literal in domain and regexp.search(domain):
                    return True
            if self._joined is not None and self._joined.search(domain):
                return True
            if self._anchored is not None and self._anchored.match(domain):
                return True
        elif self.regexps and any(r.search(domain) for r in self.regexps):
            return True
        for group in self.groups:
            if group._match(domain, lower):
                return True
        return False


#: Up to this many keywords are tried one by one; more are indexed by their first two
#: characters.
_KEYWORD_LOOP = 12


def _required_literal(pattern: re.Pattern[str], shortest: int = 3) -> str:
    """The longest run of literal characters every match must contain (at the pattern's
    top level, unrepeated), or "" when there is none of ``shortest`` characters or more."""
    if pattern.flags & re.IGNORECASE:
        return ""
    try:
        from re import _parser  # the stdlib's own regexp parser (sre_parse)

        parsed = _parser.parse(pattern.pattern, pattern.flags)
    except Exception:  # noqa: BLE001 - any doubt: no prefilter
        return ""
    best = run = ""
    for op, arg in parsed:
        if op is _parser.LITERAL:
            run += chr(arg)
            if len(run) > len(best):
                best = run
        elif op is _parser.BRANCH:
            return ""
        else:
            run = ""
    return best if len(best) >= shortest else ""


def _anchored(pattern: re.Pattern[str]) -> bool:
    """True when the regexp starts with ``^`` that no top-level ``|`` escapes (so it can
    only match at the start) and has no flags that change ``^``."""
    text = pattern.pattern
    if not text.startswith("^") or pattern.flags & re.MULTILINE:
        return False
    depth = 0
    in_class = False
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if text[i + 1:i + 2] == "^":
                i += 1
            if text[i + 1:i + 2] == "]":  # a leading ] is a member, not the end
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return False
        i += 1
    return True


def _in_ranges(ranges: Sequence[tuple[int, int]], port: int) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


@dataclass
class Rule:
    """One ``type: "field"`` rule: every given condition must hold (an AND of ORs).

    The rule leads to ``outbound_tag``, or, with ``balancer_tag`` set, to one of that
    balancer's outbounds picked at random.
    """

    outbound_tag: str
    domains: DomainMatcher | None = None
    ips: IPSet | None = None
    ports: list[tuple[int, int]] | None = None
    source_ports: list[tuple[int, int]] | None = None
    networks: frozenset[str] | None = None
    sources: IPSet | None = None
    users: frozenset[str] | None = None
    inbound_tags: frozenset[str] | None = None
    protocols: tuple[str, ...] | None = None
    never: bool = False  # a condition that can never hold: never matches
    path: str = ""
    balancer_tag: str = ""

    def match(self, ctx: RouteContext, ips: tuple[IPAddress, ...] | None) -> bool | None:
        """True / False, or None when only the target IPs (``ips`` None: unknown) decide."""
        if self.never:
            return False
        if self.domains is not None:
            if ctx.target_ip is not None or not self.domains.match(ctx.host):
                return False
        if self.users is not None and ctx.user not in self.users:
            return False
        if self.inbound_tags is not None and ctx.inbound_tag not in self.inbound_tags:
            return False
        if self.ports is not None and not _in_ranges(self.ports, ctx.port):
            return False
        if self.source_ports is not None and not _in_ranges(self.source_ports, ctx.source_port):
            return False
        if self.networks is not None and ctx.network not in self.networks:
            return False
        if self.sources is not None and ctx.source_ip not in self.sources:
            return False
        if self.protocols is not None:
            # As 4.34: a prefix of the sniffed protocol ("http" matches "http1").
            protocol = ctx.protocol
            if not protocol or not any(protocol.startswith(p) for p in self.protocols):
                return False
        if self.ips is not None:
            if ips is None:
                return None
            return any(ip in self.ips for ip in ips)
        return True


@dataclass(frozen=True, slots=True)
class Route:
    """A decision: the outbound tag (None: the default outbound) and the rule's index."""

    tag: str | None
    rule: int | None = None


@dataclass(frozen=True, slots=True)
class NeedIPs:
    """Resolve ``domain``, then call :meth:`Router.route` again with ``resolved`` set."""

    domain: str


def _random_choice(tags: Sequence[str]) -> str:
    return random.choice(tags)


@dataclass
class Router:
    """The routing rules of one config, its ``domainStrategy`` and its balancers.

    ``balancers`` maps a balancer tag to its selector (outbound tag prefixes). At each
    decision, as V2Ray 4.34, the balancer looks at the outbounds there are now
    (``outbound_tags``: the config's, or the dispatcher's live set, which the API may change)
    and ``pick`` chooses one of those selected (at random); none selected: the default.
    """

    rules: list[Rule] = field(default_factory=list)
    domain_strategy: str = AS_IS
    balancers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    outbound_tags: Collection[str] = ()
    pick: Callable[[Sequence[str]], str] = _random_choice

    def _route(self, i: int) -> Route:
        rule = self.rules[i]
        if rule.balancer_tag:
            return Route(self.balance(rule.balancer_tag), i)
        return Route(rule.outbound_tag, i)

    def balance(self, balancer: str) -> str | None:
        """The outbound tag balancer ``balancer`` picks now (None: it selects none)."""
        prefixes = self.balancers[balancer]
        tags = [t for t in self.outbound_tags if t.startswith(prefixes)]
        return self.pick(tags) if tags else None

    def route(self, ctx: RouteContext) -> Route | NeedIPs:
        """The outbound for ``ctx``, or a request to resolve the target domain first."""
        target_ip = ctx.target_ip
        if target_ip is not None:
            return self._first(ctx, (target_ip,)) or Route(None)
        strategy = self.domain_strategy
        if strategy == IP_ON_DEMAND:
            for i, rule in enumerate(self.rules):
                result = rule.match(ctx, ctx.resolved)
                if result is None:
                    return NeedIPs(ctx.host)
                if result:
                    return self._route(i)
            return Route(None)
        # AsIs, and the first pass of IPIfNonMatch: a domain target has no IPs.
        found = self._first(ctx, ())
        if found is not None or strategy != IP_IF_NON_MATCH:
            return found or Route(None)
        if ctx.resolved is None:
            if any(rule.match(ctx, None) is None for rule in self.rules):
                return NeedIPs(ctx.host)
            return Route(None)
        return self._first(ctx, ctx.resolved) or Route(None)

    def _first(self, ctx: RouteContext, ips: tuple[IPAddress, ...]) -> Route | None:
        for i, rule in enumerate(self.rules):
            if rule.match(ctx, ips):
                return self._route(i)
        return None

    def decide(self, ctx: RouteContext) -> Route:
        """:meth:`route` without resolving: IP conditions on domain targets see no IPs."""
        decision = self.route(ctx)
        if isinstance(decision, NeedIPs):
            decision = self.route(replace(ctx, resolved=()))
        assert isinstance(decision, Route)
        return decision
