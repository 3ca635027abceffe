"""V2Ray ``routing`` JSON -> :class:`~vtwist.routing.matcher.Router`.

Reads a :class:`~vtwist.config.node.Node` (errors and warnings carry JSON paths) and builds
the rules the matcher evaluates. Geo data (``geosite:``, ``geoip:``, ``ext:``) comes from
:mod:`vtwist.routing.geodata`: only the lists a config names are decoded, once each.

:func:`domain_matcher` and :func:`ip_matcher` are the builders the ``dns`` section reuses
(``hosts`` keys, ``servers[].domains``, ``expectIPs``).

Differences from V2Ray 4.34, on purpose: a rule naming a missing outbound (or a balancer
whose selector picks none) is a config error rather than a runtime fallback;
``geoip:private`` is built in when no geoip.dat is found (or it has no ``private`` list);
``geoip:!CC`` (negation, as v2fly 5 and Xray) is accepted; ``attrs`` (a Starlark expression
in 4.34) is refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence

from vtwist.address import parse_ip
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.routing.geodata.assets import GeoAssets, shared_assets
from vtwist.routing.matcher import (
    AS_IS,
    IP_IF_NON_MATCH,
    IP_ON_DEMAND,
    PRIVATE,
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

#: What the ``protocol`` rule field matches (by prefix): the sniffers' protocol names.
SNIFFED_PROTOCOLS = ("http", "tls", "bittorrent")


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


def _geosite_ref(entry: str, rest: str, path: str, file: str | None
                 ) -> tuple[str, str, tuple[str, ...]]:
    """``NAME[@attr...]`` (geosite:) or ``FILE:NAME[@attr...]`` (ext:) -> file, name, attrs."""
    if file is None:
        parts = rest.split(":")
        if len(parts) != 2 or not parts[0]:
            raise ConfigError(path, f"expected ext:FILE:NAME, got {entry!r}")
        file, rest = parts
    name, *attrs = rest.split("@")
    name = name.strip()
    if not name:
        raise ConfigError(path, f"empty list name in {entry!r}")
    return file, name, tuple(a.strip().lower() for a in attrs if a.strip())


def parse_domain(matcher: DomainMatcher, entry: str, path: str,
                 assets: GeoAssets | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
    """Add one ``domain`` entry (V2Ray's prefixes, geosite:/ext: lists) to ``matcher``.

    ``warn``: where a list's regexp that Python cannot compile is reported (it is then left
    out); without it, that is a :class:`ConfigError`.
    """
    if not entry:
        raise ConfigError(path, "empty domain rule")
    prefix, sep, rest = entry.partition(":")
    if sep and prefix in ("geosite", "ext", "ext-domain"):
        file, name, attrs = _geosite_ref(entry, rest, path,
                                         "geosite.dat" if prefix == "geosite" else None)
        assets = assets or shared_assets()
        matcher.include(assets.geosite(file, name, attrs, entry, path, warn))
    elif sep and prefix in ("domain", "full", "keyword", "regexp"):
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


def _private(assets: GeoAssets, file: str, entry: str, path: str) -> IPSet:
    """``geoip:private``: from geoip.dat when it has the list, else vtwist's built-in one."""
    found = assets.locate(file)
    if found is not None:
        try:
            return assets.geoip(file, "private", entry, path)
        except ConfigError as e:
            if "no list" not in e.message:
                raise
    return PRIVATE


def parse_ip_entries(entries: list[tuple[str, str]], assets: GeoAssets | None = None) -> IPSet:
    """``ip`` / ``source`` entries: CIDRs, single IPs, ``geoip:CC``, ``geoip:!CC``,
    ``ext:FILE:CC`` (with paths, for errors)."""
    nets: list[IPNetwork] = []
    out = IPSet()
    for entry, path in entries:
        prefix, sep, rest = entry.partition(":")
        if sep and prefix in ("geoip", "ext", "ext-ip"):
            if prefix == "geoip":
                file, code = "geoip.dat", rest
            else:
                parts = rest.split(":")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise ConfigError(path, f"expected ext:FILE:CODE, got {entry!r}")
                file, code = parts
            negate = code.startswith("!")
            code = code[1:].strip() if negate else code.strip()
            if not code:
                raise ConfigError(path, f"empty country code in {entry!r}")
            assets = assets or shared_assets()
            if prefix == "geoip" and code.lower() == "private":
                ips = _private(assets, file, entry, path)
            else:
                ips = assets.geoip(file, code, entry, path)
            if negate:
                out.include_not(ips)
            else:
                out.include(ips)
            continue
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
    if nets:
        out.include(IPSet(nets))
    if len(out.groups) == 1 and not out.negated:
        return out.groups[0]
    return out


def _flattened(matcher: DomainMatcher) -> DomainMatcher:
    """``matcher`` frozen, or the one list it only includes (one level less per match)."""
    if not len(matcher) and len(matcher.groups) == 1:
        return matcher.groups[0]
    matcher.freeze()
    return matcher


def _listed(values: Sequence[str], path: str) -> list[tuple[str, str]]:
    return [(v.strip(), f"{path}[{i}]") for i, v in enumerate(values)]


def domain_matcher(values: Sequence[str], path: str, assets: GeoAssets | None = None, *,
                   plain: str = "keyword",
                   warn: Callable[[str], None] | None = None) -> DomainMatcher:
    """A matcher for a list of domain rules, as routing's ``domain`` takes them.

    ``values``: the entries (``domain:``, ``full:``, ``keyword:``, ``regexp:``,
    ``dotless:``, ``geosite:NAME[@attr]``, ``ext:FILE:NAME[@attr]``, or a bare string);
    ``path``: the JSON path of the list (the i-th entry's errors name ``path[i]``);
    ``assets``: the :class:`~vtwist.routing.geodata.assets.GeoAssets` to read lists from
    (default: the process's shared one, so a list decodes once for routing and ``dns``);
    ``plain``: what a bare string is, ``"keyword"`` (routing, ``dns.servers[].domains``)
    or ``"full"`` (``dns.hosts`` keys); ``warn``: where a list's regexp Python cannot compile
    is reported and left out (without it, that is an error). Raises :class:`ConfigError`.

    The result may be a geosite list shared with other rules: never ``add`` to it (make a
    :class:`DomainMatcher` of your own and ``include`` it).
    """
    matcher = DomainMatcher()
    for entry, entry_path in _listed(values, path):
        prefix, sep, _ = entry.partition(":")
        if plain == "full" and entry and not (sep and prefix in (
                "domain", "full", "keyword", "regexp", "dotless", "geosite", "ext",
                "ext-domain")):
            matcher.add("full", entry)
        else:
            parse_domain(matcher, entry, entry_path, assets, warn)
    return _flattened(matcher)


def ip_matcher(values: Sequence[str], path: str, assets: GeoAssets | None = None) -> IPSet:
    """An IP set for a list of IP rules, as routing's ``ip`` / ``source`` take them.

    ``values``: IPs, CIDRs, ``geoip:CC``, ``geoip:!CC``, ``ext:FILE:CC``; ``path``: the JSON
    path of the list (entries are ``path[i]``); ``assets`` as :func:`domain_matcher`.
    Membership: ``ip in result`` for an ``ipaddress`` address. Raises :class:`ConfigError`.
    The result may be shared (a geoip list): never change it.
    """
    return parse_ip_entries(_listed(values, path), assets)


def parse_rule(node: Node, outbound_tags: Sequence[str],
               balancers: dict[str, tuple[str, ...]] | None = None,
               assets: GeoAssets | None = None) -> Rule:
    """One ``routing.rules[]`` entry (``balancers``: the parsed ``balancers`` by tag)."""
    node.require_object()
    kind = node.str("type", "")
    if kind.lower() != "field":
        raise node.error(f'expected "field" (the only rule type), got {kind!r}', "type")
    tag = node.str("outboundTag", "")
    balancer = node.str("balancerTag", "")
    if not tag and not balancer:
        raise node.error("is required (neither outboundTag nor balancerTag is set)",
                         "outboundTag")
    if tag and balancer:
        node.warn("balancerTag ignored: outboundTag is set (as V2Ray does)")
    if tag:
        if tag not in outbound_tags:
            have = ", ".join(sorted(outbound_tags)) or "none"
            raise node.error(f"no outbound is tagged {tag!r} (outbound tags: {have})",
                             "outboundTag")
        rule = Rule(outbound_tag=tag, path=node.path)
    else:
        if balancer not in (balancers or {}):
            have = ", ".join(sorted(balancers or {})) or "none"
            raise node.error(f"no balancer is tagged {balancer!r} (routing.balancers tags: "
                             f"{have})", "balancerTag")
        rule = Rule(outbound_tag="", path=node.path, balancer_tag=balancer)
    conditions = 0
    # As in V2Ray, an absent, null or empty list adds no condition.
    domain_entries = _present(node, "domain") + _present(node, "domains")
    if domain_entries:
        rule.domains = DomainMatcher()
        for entry, path in domain_entries:
            parse_domain(rule.domains, entry, path, assets, node.warn_sink)
        rule.domains = _flattened(rule.domains)
        if not rule.domains:
            node.warn("domain: its lists hold no domain (an @attribute no entry carries?), "
                      "so it never matches; V2Ray 4.34 drops such a condition instead")
        conditions += 1
    if entries := _present(node, "ip"):
        rule.ips = parse_ip_entries(entries, assets)
        conditions += 1
    if entries := _present(node, "source"):
        rule.sources = parse_ip_entries(entries, assets)
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
    if entries := _present(node, "protocol"):
        protocols = []
        for entry, path in entries:
            if entry.lower() not in SNIFFED_PROTOCOLS:
                node.warn(f"{path}: {entry!r} is not a protocol sniffing recognises "
                          f"({', '.join(SNIFFED_PROTOCOLS)}); it never matches")
            if entry:
                protocols.append(entry)
        rule.protocols = tuple(protocols)
        conditions += 1
    if node.has("attrs") and node.value["attrs"]:
        raise node.error("attrs (4.34 evaluates a Starlark expression over sniffed HTTP "
                         "attributes) is not supported by vtwist; remove it or match with "
                         "domain, protocol or port", "attrs")
    if conditions == 0:
        raise node.error("this rule has no conditions (domain, ip, port, sourcePort, network, "
                         "source, user, inboundTag, protocol)")
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


def parse_balancers(node: Node, outbound_tags: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``balancers``: [{tag, selector: [tag prefixes]}] -> each one's prefixes."""
    balancers: dict[str, tuple[str, ...]] = {}
    if node.value is None:
        return balancers
    for item in node.items():
        item.require_object()
        tag = item.str("tag", "")
        if not tag:
            raise item.error("empty balancer tag", "tag")
        if tag in balancers:
            raise item.error(f"duplicate balancer tag {tag!r}", "tag")
        selectors = [e for e, _ in _present(item, "selector") if e]
        if not selectors:
            raise item.error("empty selector list (outbound tag prefixes)", "selector")
        if not any(t.startswith(tuple(selectors)) for t in outbound_tags):
            have = ", ".join(sorted(outbound_tags)) or "none"
            item.warn(f"selector: {selectors} selects no outbound (tags: {have}); its rules "
                      "go to the default outbound until one is added (as 4.34)")
        balancers[tag] = tuple(selectors)
        item.warn_unknown()
    return balancers


def parse_routing(node: Node, outbound_tags: Sequence[str],
                  assets: GeoAssets | None = None) -> Router:
    """The ``routing`` object (``settings`` is V2Ray's deprecated wrapper, merged in).

    ``assets``: where geo data lists come from (default: the process's shared one).
    """
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
    router.balancers = parse_balancers(node.get("balancers", None), outbound_tags)
    router.outbound_tags = tuple(outbound_tags)
    router.rules = [parse_rule(r, outbound_tags, router.balancers, assets) for r in rule_nodes]
    node.warn_unknown()
    return router
