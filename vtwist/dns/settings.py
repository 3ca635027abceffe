"""The ``dns`` section as V2Ray 4.34 takes it, validated without Twisted.

``servers``: a string (``"8.8.8.8"``, ``"8.8.8.8:5353"``, ``"localhost"``,
``"https://dns.google/dns-query"``, ``"https+local://…"``; vtwist also takes
``"tcp://host:port"``, ``"tcp+local://…"`` and ``"udp://host:port"``) or an object
{``address``, ``port``, ``domains``, ``expectIPs``, ``clientIp``}. ``hosts`` maps
``domain:``/``full:``/``keyword:``/``regexp:``/``dotless:``/``geosite:``/``ext:`` keys (a
bare name is ``full:``) to an IP, a list of IPs, or a domain (an alias). ``clientIp`` sends
an EDNS Client Subnet option; ``tag`` is the inbound tag routed queries carry.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from vtwist.address import is_valid_domain, parse_ip
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.routing import parse as routing_parse
from vtwist.routing.matcher import DomainMatcher, IPSet

#: The server kinds: classic UDP / TCP (routed with the dns tag), the same sent directly
#: (``*-local``), DoH routed or direct, and the system resolver.
UDP, TCP, TCP_LOCAL, UDP_LOCAL, DOH, DOH_LOCAL, LOCALHOST = (
    "udp", "tcp", "tcp-local", "udp-local", "doh", "doh-local", "localhost")

#: Names a ``localhost`` server answers first, as 4.34 (local TLDs and dotless names).
LOCAL_TLD_RULES = ("regexp:^[^.]+$", "domain:lan", "domain:local", "domain:localdomain",
                   "domain:localhost", "domain:home.arpa", "domain:example", "domain:invalid",
                   "domain:test")


@dataclass
class NameServer:
    """One ``dns.servers[]`` entry."""

    kind: str
    host: str = ""
    port: int = 53
    #: DoH: the URL the query is POSTed to
    url: str = ""
    #: ``domains``: names this server answers first (None: no priority)
    domains: DomainMatcher | None = None
    #: ``expectIPs``: keep only answers in these ranges (None: keep all)
    expect_ips: IPSet | None = None
    #: EDNS Client Subnet address (the server's own ``clientIp``, else the section's)
    client_ip: str | None = None
    path: str = ""

    @property
    def name(self) -> str:
        """How logs name this server."""
        if self.kind == LOCALHOST:
            return "localhost"
        if self.url:
            return self.url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.kind}://{host}:{self.port}"


@dataclass
class HostRule:
    """One ``dns.hosts`` entry: the names it covers and their IPs or alias."""

    matcher: DomainMatcher
    ips: tuple[str, ...] = ()
    alias: str = ""
    path: str = ""


@dataclass
class DnsConfig:
    """The whole ``dns`` section."""

    servers: list[NameServer] = field(default_factory=list)
    hosts: list[HostRule] = field(default_factory=list)
    client_ip: str | None = None
    tag: str = ""
    #: vtwist: how long one server may take to answer (V2Ray: 4 s)
    timeout: float = 4.0
    disable_cache: bool = False


def add_domain(matcher: DomainMatcher, entry: str, path: str, bare: str = "keyword") -> None:
    """Add one domain rule (the routing rule forms) to ``matcher``; a rule without a prefix
    is ``bare`` (``keyword`` in ``domains``, ``full`` in ``hosts`` keys, as 4.34)."""
    prefix, sep, _ = entry.partition(":")
    if bare == "full" and not (sep and prefix in (
            "domain", "full", "keyword", "regexp", "dotless", "geosite", "ext", "ext-domain")):
        if not entry:
            raise ConfigError(path, "empty domain")
        matcher.add("full", entry)
        return
    routing_parse.parse_domain(matcher, entry, path)


def _client_ip(node: Node, key: str) -> str | None:
    if not node.has(key) or node.value[key] in (None, ""):
        return None
    value = node.str(key)
    ip = parse_ip(value)
    if ip is None:
        raise node.error(f"expected an IP address, got {value!r}", key)
    return str(ip)


def _split_hostport(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    if parse_ip(text) is not None:
        return str(parse_ip(text)), None
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and host:
        return host.strip("[]"), int(port)
    return text, None


def parse_address(node: Node, address: str, port: int) -> NameServer:
    """A server address string (and the object's ``port``; 0 = the default)."""
    if address.lower() == "localhost":
        return NameServer(LOCALHOST, path=node.path)
    scheme, sep, rest = address.partition("://")
    scheme = scheme.lower()
    if sep and scheme in ("https", "https+local"):
        try:
            url = urlsplit(address)
        except ValueError as e:  # e.g. "Invalid IPv6 URL"
            raise node.error(f"bad URL {address!r}: {e}") from None
        if not url.hostname:
            raise node.error(f"expected a URL like https://dns.google/dns-query, got {address!r}")
        try:
            url_port = url.port
        except ValueError:
            raise node.error(f"bad port in {address!r}") from None
        kind = DOH if scheme == "https" else DOH_LOCAL
        full = "https://" + address[len(scheme) + 3:]
        return NameServer(kind, url.hostname, url_port or port or 443, url=full, path=node.path)
    if sep and scheme in ("quic+local", "quic"):
        raise node.error(f"{address!r}: DNS over QUIC is not supported by vtwist "
                         "(use https+local:// or a plain address)")
    kind = UDP
    if sep:
        kinds = {"udp": UDP, "udp+local": UDP_LOCAL, "tcp": TCP, "tcp+local": TCP_LOCAL}
        if scheme not in kinds:
            raise node.error(f"unknown DNS server scheme {scheme!r} in {address!r} (use a "
                             "plain address, localhost, https://, https+local://, tcp://)")
        kind, address = kinds[scheme], rest.rstrip("/")
    host, given = _split_hostport(address)
    if parse_ip(host) is None and not is_valid_domain(host):
        raise node.error(f"expected an IP address or domain, got {address!r}")
    return NameServer(kind, host, port or given or 53, path=node.path)


def parse_server(node: Node, client_ip: str | None) -> NameServer:
    """One ``servers[]`` entry: a string or an object."""
    if isinstance(node.value, str):
        server = parse_address(node, node.value.strip(), 0)
        server.client_ip = client_ip
        _local_names(server)
        return server
    node.require_object()
    address = node.str("address")
    port = node.int("port", 0, 0, 65535)
    server = parse_address(node.get("address"), address.strip(), port)
    server.path = node.path
    server.client_ip = _client_ip(node, "clientIp") or client_ip
    entries = node.get("domains", [])
    if entries.value:  # routing's builder: domain:, full:, keyword:, regexp:, geosite: ...
        server.domains = routing_parse.domain_matcher(_strings(entries), entries.path)
    _local_names(server)
    for key in ("expectIPs", "expectIps"):
        if node.has(key) and node.value[key]:
            item = node.get(key)
            server.expect_ips = routing_parse.ip_matcher(_strings(item), item.path)
    node.warn_unknown()
    return server


def _strings(node: Node) -> list[str]:
    """A list of strings (V2Ray's StringList: one string is split at commas)."""
    if isinstance(node.value, str):
        return node.value.split(",")
    return [item.as_str() for item in node.items()]


def _local_names(server: NameServer) -> None:
    """4.34 lets a ``localhost`` server answer local TLDs and dotless names first."""
    if server.kind == LOCALHOST:
        local = routing_parse.domain_matcher(LOCAL_TLD_RULES, server.path)
        if server.domains is not None:
            both = DomainMatcher()  # the built matchers may be shared: include, never add
            both.include(server.domains)
            both.include(local)
            local = both
        server.domains = local


def _host_values(node: Node) -> tuple[tuple[str, ...], str]:
    """A hosts value: an IP, a list of IPs, or one domain (an alias)."""
    values = [node.value] if isinstance(node.value, str) else [i.as_str() for i in node.items()]
    if not values:
        raise node.error("expected an IP, a list of IPs or a domain, got an empty list")
    ips: list[str] = []
    for value in values:
        ip = parse_ip(value.strip())
        if ip is not None:
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            ips.append(str(ip))
        elif len(values) == 1 and is_valid_domain(value.strip()):
            return (), value.strip().rstrip(".")
        else:
            raise node.error(f"expected an IP address (or one domain as an alias), "
                             f"got {value!r}")
    return tuple(ips), ""


def parse_hosts(node: Node) -> list[HostRule]:
    """``hosts``: keys in sorted order (as 4.34 builds them); every matching key counts."""
    rules: list[HostRule] = []
    for key in sorted(node.keys()):
        value = node.get(key)
        matcher = DomainMatcher()
        add_domain(matcher, key.strip(), value.path, bare="full")
        ips, alias = _host_values(value)
        rules.append(HostRule(matcher, ips, alias, value.path))
    return rules


def parse_dns(node: Node) -> DnsConfig | None:
    """The ``dns`` object (None when absent or null)."""
    if node.value is None:
        return None
    node.require_object()
    config = DnsConfig()
    config.client_ip = _client_ip(node, "clientIp")
    config.tag = node.str("tag", "")
    config.disable_cache = node.bool("disableCache", False)
    if node.has("servers") and node.value["servers"] is not None:
        config.servers = [parse_server(n, config.client_ip)
                          for n in node.get("servers").items()]
    if node.has("hosts") and node.value["hosts"] is not None:
        config.hosts = parse_hosts(node.get("hosts"))
    node.warn_unknown()
    return config
