"""V2Ray ``routing``: field rules and their matching (sans-IO: no reactor, no resolver).

A :class:`Router` holds the rules of a config's ``routing`` section and picks an outbound tag
for a :class:`RouteContext` (target, inbound tag, source, user). First matching rule wins;
no match gives ``None`` (the dispatcher's default outbound).

Name resolution stays outside: when a rule with an ``ip`` condition must see the IPs of a
domain target (``IPOnDemand``, or ``IPIfNonMatch`` after a first pass matched nothing),
:meth:`Router.route` answers :class:`NeedIPs`; the caller resolves the domain and asks
again with ``RouteContext.resolved`` set (an empty tuple when resolution failed, as V2Ray
then lets IP conditions fail). With ``AsIs``, IP conditions see IP-literal targets only.

Differences from V2Ray 4.34, on purpose: ``domain``/``full:``/``keyword:`` compare
case-insensitively (DNS names are), ``regexp:`` uses Python's ``re`` (RE2 patterns mostly
work the same), a rule naming a missing outbound is a config error rather than a runtime
fallback, and geosite/geoip data files are not read (``geoip:private`` is built in).
"""

from __future__ import annotations

import bisect
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from vtwist.address import parse_ip
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

AS_IS = "AsIs"
IP_IF_NON_MATCH = "IPIfNonMatch"
IP_ON_DEMAND = "IPOnDemand"
# V2Ray's accepted spellings (compared lower-cased). "AlwaysIP" parses in V2Ray 4.34 but its
# router then behaves as AsIs; vtwist does the same and says so.
_STRATEGIES = {
    "asis": AS_IS, "as_is": AS_IS, "as-is": AS_IS, "": AS_IS,
    "ipifnonmatch": IP_IF_NON_MATCH, "ip_if_non_match": IP_IF_NON_MATCH,
    "ip-if-non-match": IP_IF_NON_MATCH,
    "ipondemand": IP_ON_DEMAND, "ip_on_demand": IP_ON_DEMAND, "ip-on-demand": IP_ON_DEMAND,
}
_ALWAYS_IP = ("alwaysip", "always_ip", "always-ip")

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


# -- config ---------------------------------------------------------------------------------
def _entries(rule: Node, key: str) -> list[tuple[str, str]]:
    """A V2Ray StringList at ``key``: an array, or one string split on commas; with paths."""
    node = rule.get(key)
    if isinstance(node.value, str):
        return [(part.strip(), node.path) for part in node.value.split(",")]
    return [(item.as_str().strip(), item.path) for item in node.items()]


def _present(rule: Node, key: str) -> list[tuple[str, str]]:
    """:func:`_entries` at ``key``, or nothing when the key is absent or null."""
    if not rule.has(key) or rule.value[key] is None:
        return []
    return _entries(rule, key)


def parse_port_ranges(node: Node) -> list[tuple[int, int]]:
    """``53``, ``"53"``, ``"1000-2000"`` or ``"80,443,1000-2000"`` -> ranges."""
    value = node.value
    expected = 'expected a port, a range like "1000-2000" or a list like "80,443"'
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 65535:
            raise node.error(f"{expected}, got {value}")
        return [(value, value)]
    if not isinstance(value, str):
        raise node.error(f"{expected}, got {type(value).__name__}")
    ranges: list[tuple[int, int]] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise node.error(f"{expected}, got {value!r}") from None
        if not 0 <= lo <= hi <= 65535:
            raise node.error(f"port range out of 0-65535 or reversed: {part!r}")
        ranges.append((lo, hi))
    if not ranges:
        raise node.error(f"{expected}, got {value!r}")
    return ranges


def parse_domain(matcher: DomainMatcher, entry: str, path: str) -> None:
    """Add one ``domain`` entry (V2Ray's prefixes) to ``matcher``."""
    if not entry:
        raise ConfigError(path, "empty domain rule")
    prefix, sep, rest = entry.partition(":")
    if sep and prefix in ("geosite", "ext", "ext-domain"):
        raise ConfigError(path, f"{entry!r}: geosite data files (geosite.dat, ext:) are not "
                                "supported by vtwist; list the domains themselves "
                                "(domain:, full:, keyword:, regexp:)")
    if sep and prefix in ("domain", "full", "keyword", "regexp"):
        if not rest:
            raise ConfigError(path, f"empty {prefix} rule: {entry!r}")
        if prefix == "regexp":
            try:
                matcher.add("regexp", rest)
            except re.error as e:
                raise ConfigError(path, f"invalid regexp {rest!r}: {e}") from None
        else:
            matcher.add(prefix, rest)
    elif sep and prefix == "dotless":
        if "." in rest:
            raise ConfigError(path, f"dotless: rule must not contain a dot: {entry!r}")
        matcher.add("regexp", f"^[^.]*{re.escape(rest)}[^.]*$")
    else:
        matcher.add("keyword", entry)


def parse_ip_entries(entries: list[tuple[str, str]]) -> IPSet:
    """``ip`` / ``source`` entries: CIDRs, single IPs, ``geoip:private``."""
    nets: list[IPNetwork] = []
    for entry, path in entries:
        prefix, sep, rest = entry.partition(":")
        if sep and prefix in ("geoip", "ext", "ext-ip"):
            if prefix == "geoip" and rest.lower() == "private":
                nets.extend(ipaddress.ip_network(n) for n in PRIVATE_NETWORKS)
                continue
            raise ConfigError(path, f"{entry!r}: geoip data files (geoip.dat, ext:) are not "
                                    "supported by vtwist; only geoip:private is built in, "
                                    "list other ranges as CIDRs")
        addr, slash, mask = entry.partition("/")
        ip = parse_ip(addr)
        if ip is None or (slash and not mask.isdigit()):
            raise ConfigError(path, f"expected an IP or CIDR like 10.0.0.0/8, got {entry!r}")
        bits = int(mask) if slash else ip.max_prefixlen
        if bits > ip.max_prefixlen:
            raise ConfigError(path, f"prefix length over {ip.max_prefixlen}: {entry!r}")
        net = ipaddress.ip_network(f"{ip}/{bits}", strict=False)
        if isinstance(net, ipaddress.IPv6Network) and bits >= 96 and ip.ipv4_mapped is not None:
            net = ipaddress.ip_network(f"{ip.ipv4_mapped}/{bits - 96}", strict=False)
        nets.append(net)
    return IPSet(nets)


def parse_rule(node: Node, outbound_tags: Sequence[str]) -> Rule:
    """One ``routing.rules[]`` entry."""
    node.require_object()
    kind = node.str("type", "")
    if kind.lower() != "field":
        raise node.error(f'expected "field" (the only rule type), got {kind!r}', "type")
    tag = node.str("outboundTag", "")
    balancer = node.str("balancerTag", "")
    if not tag:
        if balancer:
            raise node.error("balancers are not supported by vtwist; use outboundTag",
                             "balancerTag")
        raise node.error("is required (neither outboundTag nor balancerTag is set)",
                         "outboundTag")
    if balancer:
        node.warn("balancerTag ignored: outboundTag is set (as V2Ray does)")
    if tag not in outbound_tags:
        have = ", ".join(sorted(outbound_tags)) or "none"
        raise node.error(f"no outbound is tagged {tag!r} (outbound tags: {have})",
                         "outboundTag")
    rule = Rule(outbound_tag=tag, path=node.path)
    conditions = 0
    # As in V2Ray, an absent, null or empty list adds no condition.
    domain_entries = _present(node, "domain") + _present(node, "domains")
    if domain_entries:
        rule.domains = DomainMatcher()
        for entry, path in domain_entries:
            parse_domain(rule.domains, entry, path)
        conditions += 1
    if entries := _present(node, "ip"):
        rule.ips = parse_ip_entries(entries)
        conditions += 1
    if entries := _present(node, "source"):
        rule.sources = parse_ip_entries(entries)
        conditions += 1
    if node.has("port") and node.value["port"] is not None:
        rule.ports = parse_port_ranges(node.get("port"))
        conditions += 1
    if node.has("sourcePort") and node.value["sourcePort"] is not None:
        rule.source_ports = parse_port_ranges(node.get("sourcePort"))
        conditions += 1
    if entries := _present(node, "network"):
        networks = set()
        for entry, path in entries:
            if entry.lower() not in ("tcp", "udp"):
                raise ConfigError(path, f'expected "tcp", "udp" or "tcp,udp", got {entry!r}')
            networks.add(entry.lower())
        rule.networks = frozenset(networks)
        conditions += 1
    if entries := _present(node, "user"):
        rule.users = frozenset(e for e, _ in entries if e)
        conditions += 1
    if entries := _present(node, "inboundTag"):
        rule.inbound_tags = frozenset(e for e, _ in entries if e)
        conditions += 1
    for key, why in (("protocol", "protocol matching needs sniffing"),
                     ("attrs", "attrs matching needs sniffing")):
        if node.has(key) and node.value[key]:
            node.warn(f"{key}: {why}, which vtwist does not have; this rule never matches")
            rule.never = True
            conditions += 1
    if conditions == 0:
        raise node.error("this rule has no conditions (domain, ip, port, sourcePort, network, "
                         "source, user, inboundTag)")
    node.warn_unknown()
    return rule


def parse_strategy(node: Node) -> str:
    """``domainStrategy``: AsIs, IPIfNonMatch or IPOnDemand (V2Ray's spellings)."""
    value = node.as_str()
    key = value.lower()
    if key in _ALWAYS_IP:
        node.warn(f"{value}: V2Ray 4.34's router treats it as AsIs; so does vtwist")
        return AS_IS
    if key not in _STRATEGIES:
        raise node.error(f"expected one of AsIs, IPIfNonMatch, IPOnDemand, got {value!r}")
    return _STRATEGIES[key]


def parse_routing(node: Node, outbound_tags: Sequence[str]) -> Router:
    """The ``routing`` object (``settings`` is V2Ray's deprecated wrapper, merged in)."""
    router = Router()
    if node.value is None:
        return router
    node.require_object()
    rule_nodes: list[Node] = []
    strategy_node: Node | None = None
    if node.has("settings") and node.value["settings"] is not None:
        settings = node.get("settings")
        node.warn("settings is deprecated; put rules and domainStrategy in routing itself")
        if settings.has("domainStrategy"):
            strategy_node = settings.get("domainStrategy", "")
        rule_nodes.extend(settings.get("rules", []).items())
        settings.warn_unknown()
    if node.has("domainStrategy") and node.value["domainStrategy"] is not None:
        strategy_node = node.get("domainStrategy")
    if strategy_node is not None:
        router.domain_strategy = parse_strategy(strategy_node)
    rule_nodes[:0] = list(node.get("rules", []).items())
    router.rules = [parse_rule(r, outbound_tags) for r in rule_nodes]
    balancers = node.get("balancers", [])
    if balancers.value:
        raise balancers.error("balancers are not supported by vtwist; use outboundTag rules")
    node.warn_unknown()
    return router
