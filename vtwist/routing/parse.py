"""V2Ray ``routing`` JSON -> :class:`~vtwist.routing.matcher.Router`.

Reads a :class:`~vtwist.config.node.Node` (errors and warnings carry JSON paths) and builds
the rules the matcher evaluates. Differences from V2Ray 4.34, on purpose: a rule naming a
missing outbound is a config error rather than a runtime fallback, and geosite/geoip data
files are not read (``geoip:private`` is built in).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from vtwist.address import parse_ip
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.routing.matcher import (
    AS_IS,
    IP_IF_NON_MATCH,
    IP_ON_DEMAND,
    PRIVATE_NETWORKS,
    DomainMatcher,
    IPNetwork,
    IPSet,
    Router,
    Rule,
)

# V2Ray's accepted spellings (compared lower-cased). "AlwaysIP" parses in V2Ray 4.34 but its
# router then behaves as AsIs; vtwist does the same and says so.
_STRATEGIES = {
    "asis": AS_IS, "as_is": AS_IS, "as-is": AS_IS, "": AS_IS,
    "ipifnonmatch": IP_IF_NON_MATCH, "ip_if_non_match": IP_IF_NON_MATCH,
    "ip-if-non-match": IP_IF_NON_MATCH,
    "ipondemand": IP_ON_DEMAND, "ip_on_demand": IP_ON_DEMAND, "ip-on-demand": IP_ON_DEMAND,
}
_ALWAYS_IP = ("alwaysip", "always_ip", "always-ip")


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
