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

Differences from V2Ray 4.34, on purpose: ``domain``/``full:``/``keyword:`` compare
case-insensitively (DNS names are) and ``regexp:`` uses Python's ``re`` (RE2 patterns mostly
work the same).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Sequence
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
    """A set of CIDR networks with O(log n) membership (per family, merged ranges)."""

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        by_family: dict[int, list[IPNetwork]] = {4: [], 6: []}
        for net in networks:
            by_family[net.version].append(net)
        for version, nets in by_family.items():
            for net in ipaddress.collapse_addresses(nets):  # type: ignore[type-var]
                self._starts[version].append(int(net.network_address))
                self._ends[version].append(int(net.broadcast_address))

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        n = int(ip)
        starts = self._starts[ip.version]
        i = bisect.bisect_right(starts, n) - 1
        return i >= 0 and n <= self._ends[ip.version][i]

    def __bool__(self) -> bool:
        return bool(self._starts[4] or self._starts[6])


PRIVATE = IPSet(ipaddress.ip_network(n) for n in PRIVATE_NETWORKS)


class DomainMatcher:
    """V2Ray's domain list: plain/keyword (substring), ``domain:``, ``full:``, ``regexp:``."""

    def __init__(self) -> None:
        self.full: set[str] = set()
        self.suffixes: set[str] = set()
        self.keywords: list[str] = []
        self.regexps: list[re.Pattern[str]] = []

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
        else:
            raise ValueError(f"unknown domain pattern kind {kind!r}")

    def __bool__(self) -> bool:
        return bool(self.full or self.suffixes or self.keywords or self.regexps)

    def match(self, domain: str) -> bool:
        """True when ``domain`` matches any pattern."""
        lower = domain.lower()
        if lower in self.full:
            return True
        if self.suffixes:
            if lower in self.suffixes:
                return True
            dot = lower.find(".")
            while dot >= 0:
                if lower[dot + 1:] in self.suffixes:
                    return True
                dot = lower.find(".", dot + 1)
        for keyword in self.keywords:
            if keyword in lower:
                return True
        return any(r.search(domain) for r in self.regexps)


def _in_ranges(ranges: Sequence[tuple[int, int]], port: int) -> bool:
    return any(lo <= port <= hi for lo, hi in ranges)


@dataclass
class Rule:
    """One ``type: "field"`` rule: every given condition must hold (an AND of ORs)."""

    outbound_tag: str
    domains: DomainMatcher | None = None
    ips: IPSet | None = None
    ports: list[tuple[int, int]] | None = None
    source_ports: list[tuple[int, int]] | None = None
    networks: frozenset[str] | None = None
    sources: IPSet | None = None
    users: frozenset[str] | None = None
    inbound_tags: frozenset[str] | None = None
    never: bool = False  # conditions vtwist cannot evaluate (protocol, attrs): never matches
    path: str = ""

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


@dataclass
class Router:
    """The routing rules of one config and its ``domainStrategy``."""

    rules: list[Rule] = field(default_factory=list)
    domain_strategy: str = AS_IS

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
                    return Route(rule.outbound_tag, i)
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
                return Route(rule.outbound_tag, i)
        return None

    def decide(self, ctx: RouteContext) -> Route:
        """:meth:`route` without resolving: IP conditions on domain targets see no IPs."""
        decision = self.route(ctx)
        if isinstance(decision, NeedIPs):
            decision = self.route(replace(ctx, resolved=()))
        assert isinstance(decision, Route)
        return decision
