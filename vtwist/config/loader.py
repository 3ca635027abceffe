"""Load and validate V2Ray 4.x JSON configs (comments allowed, as V2Ray allows them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vtwist.config.errors import ConfigError
from vtwist.config.legacy import domain_override, legacy_sections
from vtwist.config.model import (
    AllocateSettings,
    ApiConfig,
    Config,
    InboundConfig,
    LogConfig,
    MetricsConfig,
    MuxSettings,
    OutboundConfig,
    SniffingSettings,
)
from vtwist.config.node import Node
from vtwist.config.registry import (
    INBOUND_MODULES,
    OUTBOUND_MODULES,
    dns_parser,
    inbound_spec,
    outbound_spec,
    routing_parser,
    stream_settings_parser,
    transport_keys,
)
from vtwist.config.reverse import parse_reverse
from vtwist.policy import DEFAULT_MAX_HANDSHAKES, LevelPolicy, Policy, SystemPolicy

LOG_LEVELS = ("debug", "info", "warning", "error", "none")
LOG_FORMATS = ("text", "json")  # log.format: vtwist's own key
# Top-level sections V2Ray knows but vtwist does not act on yet: a warning, not an error.
UNSUPPORTED_SECTIONS = ("fakedns",
                        "observatory", "browserForwarder")


def strip_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments outside JSON strings (newlines are kept)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
        elif c == '"':
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i) or c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ConfigError("", "unterminated /* comment")
            out.append("\n" * text.count("\n", i, end))
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def loads(text: str) -> Any:
    """Parse JSON with comments; errors name the line and column."""
    stripped = strip_comments(text)
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as e:
        end = stripped.rstrip()
        if end and (e.pos >= len(end) or e.msg.startswith("Unterminated string")):
            where = f"line {e.lineno}, column {e.colno}"
            detail = f"a string starting at {where} never ends" \
                if e.msg.startswith("Unterminated string") else f"{e.msg} at {where}"
            raise ConfigError("", f"invalid JSON: the file ends before the JSON is complete "
                                  f"(it looks truncated; {detail})") from None
        raise ConfigError("", f"invalid JSON (line {e.lineno}, column {e.colno}): "
                              f"{e.msg}") from None
    except RecursionError:
        raise ConfigError("", "invalid JSON: nested too deeply") from None


def load_file(path: str) -> Any:
    """Read and parse a config file."""
    try:
        with open(path, encoding="utf-8-sig") as f:  # a leading BOM is tolerated
            text = f.read()
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError("", f"cannot read {path}: not UTF-8 text (byte {e.start})") from None
    return loads(text)


def parse_ports(node: Node) -> list[int]:
    """``port``: a number, ``"1080"``, a range ``"1000-1002"`` or a list ``"80,443,1000-1002"``."""
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool):
        return [node.as_int(1, 65535)]
    if not isinstance(value, str) or not value.strip():
        raise node.error(f"expected a port 1-65535 or a range like \"1000-2000\", got {json.dumps(value)}")
    ports: list[int] = []
    for part in value.split(","):
        lo_s, sep, hi_s = part.strip().partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise node.error(
                f"expected a port 1-65535 or a range like \"1000-2000\", got {json.dumps(value)}"
            ) from None
        if not (1 <= lo <= hi <= 65535):
            raise node.error(f"port range out of 1-65535 or reversed: {part.strip()!r}")
        ports.extend(range(lo, hi + 1))
    return ports


def parse_log(node: Node) -> LogConfig:
    """The ``log`` object."""
    if node.value is None:
        return LogConfig()
    log = LogConfig()
    log.loglevel = node.str("loglevel", "warning", choices=LOG_LEVELS, lower=True)
    log.access = node.str("access", "") or None
    log.error = node.str("error", "") or None
    log.format = node.str("format", "text", choices=LOG_FORMATS, lower=True)
    node.warn_unknown(("dnsLog",))
    return log


def parse_policy(node: Node) -> Policy:
    """The ``policy`` object: ``levels`` with V2Ray's default timeouts."""
    if node.value is None:
        return Policy()
    levels: dict[int, LevelPolicy] = {}
    levels_node = node.get("levels", {})
    defaults = LevelPolicy()
    for key in levels_node.keys():
        level_node = levels_node.get(key)
        if not key.isdigit():
            raise levels_node.error(f"expected a level number, got {key!r}")
        levels[int(key)] = LevelPolicy(
            handshake=level_node.int("handshake", defaults.handshake, 0),
            conn_idle=level_node.int("connIdle", defaults.conn_idle, 0),
            uplink_only=level_node.int("uplinkOnly", defaults.uplink_only, 0),
            downlink_only=level_node.int("downlinkOnly", defaults.downlink_only, 0),
            buffer_size=level_node.int("bufferSize", None, 0) if level_node.has("bufferSize")
            else None,
            stats_user_uplink=level_node.bool("statsUserUplink", False),
            stats_user_downlink=level_node.bool("statsUserDownlink", False),
        )
        level_node.warn_unknown()
    system = SystemPolicy()
    if node.has("system"):
        system_node = node.get("system", {})
        system = SystemPolicy(
            stats_inbound_uplink=system_node.bool("statsInboundUplink", False),
            stats_inbound_downlink=system_node.bool("statsInboundDownlink", False),
            stats_outbound_uplink=system_node.bool("statsOutboundUplink", False),
            stats_outbound_downlink=system_node.bool("statsOutboundDownlink", False),
            max_handshakes=system_node.int("maxHandshakes", DEFAULT_MAX_HANDSHAKES, 0),
        )
        system_node.warn_unknown()
    node.warn_unknown()
    return Policy(levels, system)


#: ``api.services`` names 4.34 knows; vtwist serves the first three.
API_SERVICES = {"StatsService": "v2ray.core.app.stats.command.StatsService",
                "LoggerService": "v2ray.core.app.log.command.LoggerService",
                "HandlerService": "v2ray.core.app.proxyman.command.HandlerService"}
API_UNSERVED = ("RoutingService", "ReflectionService")


def parse_api(node: Node) -> ApiConfig:
    """``api``: ``tag`` (required) and ``services`` (StatsService, LoggerService,
    HandlerService)."""
    tag = node.str("tag", "")
    if not tag:
        raise node.error("is required (the outbound tag routing sends API traffic to)", "tag")
    api = ApiConfig(tag)
    item = node.get("services", [])
    for i, name in enumerate(node.str_list("services", [])):
        if name in API_SERVICES:
            api.services.append(API_SERVICES[name])
        elif name in API_UNSERVED:
            item.warn(f"{name} is not served by vtwist; ignored")
        else:
            raise item.error(f"unknown API service {name!r} (expected "
                             f"{', '.join([*API_SERVICES, *API_UNSERVED])})", i)
    node.warn_unknown()
    return api


def parse_metrics(node: Node) -> MetricsConfig:
    """``metrics`` (vtwist's own): ``port`` (required), ``listen`` (default 127.0.0.1)."""
    metrics = MetricsConfig(port=node.int("port", lo=1, hi=65535))
    metrics.listen = node.str("listen", "127.0.0.1") or "127.0.0.1"
    node.warn_unknown()
    return metrics


def parse_inbound(node: Node, transport: Node | None = None) -> InboundConfig:
    """One ``inbounds[]`` entry."""
    protocol = node.str("protocol", lower=True)
    spec = inbound_spec(protocol)
    if spec is None:
        raise node.error(f"unsupported inbound protocol {protocol!r} (vtwist has: "
                         f"{', '.join(sorted(INBOUND_MODULES))})", "protocol")
    listen = node.str("listen", "0.0.0.0") or "0.0.0.0"
    if listen.startswith(("/", "@")):
        # a UNIX socket (4.34: /path, @name, @@name): no port needed, one listener
        ports = parse_ports(node.get("port"))[:1] if node.has("port") else [0]
    else:
        ports = parse_ports(node.get("port"))
    inbound = InboundConfig(protocol=protocol, ports=ports)
    inbound.listen = listen
    inbound.tag = node.str("tag", "")
    inbound.settings = spec.parse_settings(node.get("settings", {}))
    inbound.stream = stream_settings_parser()(node.get("streamSettings", {}),
                                               inbound=True, transport=transport)
    if node.has("sniffing"):
        inbound.sniffing = parse_sniffing(node.get("sniffing", {}))
    elif node.has("domainOverride") and node.value.get("domainOverride"):
        inbound.sniffing = SniffingSettings(True, domain_override(node))
    if node.has("allocate"):
        inbound.allocate = parse_allocate(node.get("allocate", {}), len(inbound.ports))
    node.warn_unknown()
    return inbound


def parse_sniffing(node: Node) -> SniffingSettings:
    """An inbound's ``sniffing``: ``enabled``, ``destOverride`` (http; tls, https, ssl)."""
    sniffing = SniffingSettings(enabled=node.bool("enabled", False))
    item = node.get("destOverride", [])
    for value in node.comma_list("destOverride"):
        name = value.lower()
        if name == "http":
            sniffing.dest_override.append("http")
        elif name in ("tls", "https", "ssl"):
            sniffing.dest_override.append("tls")
        else:
            raise item.error(f"expected http or tls (https, ssl), got {value!r}")
    node.warn_unknown()
    return sniffing


def parse_allocate(node: Node, ports: int) -> AllocateSettings:
    """An inbound's ``allocate``: ``strategy`` always/random, ``refresh`` (minutes),
    ``concurrency`` (random ports open at a time; fewer than the range has, as 4.34 checks)."""
    strategy = node.str("strategy", "", lower=True)
    if strategy not in ("always", "random"):
        raise node.error(f"expected always or random, got {strategy!r}"
                         + (" (4.34 has no \"external\" allocator)" if strategy == "external"
                            else ""), "strategy")
    allocate = AllocateSettings(strategy)
    allocate.refresh = node.int("refresh", 5, 1)
    allocate.concurrency = node.int("concurrency", 3, 1)
    if strategy == "random" and allocate.concurrency >= ports:
        raise node.error(f"not enough ports: {allocate.concurrency} open at a time needs a "
                         f"range of more than {allocate.concurrency} ports, the inbound has "
                         f"{ports}", "concurrency")
    node.warn_unknown()
    return allocate


def parse_mux(node: Node) -> MuxSettings | None:
    """An outbound's ``mux`` as V2Ray 4.34 reads it: off unless ``enabled``; ``concurrency``
    below 0 turns it off, 0 or absent means 8, above 1024 is an error."""
    enabled = node.bool("enabled", False)
    concurrency = node.int("concurrency", 0)
    if concurrency > 1024:
        raise node.get("concurrency").error(
            f"invalid mux concurrency {concurrency} (at most 1024, as V2Ray 4.34)")
    node.warn_unknown()
    if not enabled or concurrency < 0:
        return None
    return MuxSettings(concurrency or 8)


def parse_outbound(node: Node, transport: Node | None = None) -> OutboundConfig:
    """One ``outbounds[]`` entry."""
    protocol = node.str("protocol", lower=True)
    spec = outbound_spec(protocol)
    if spec is None:
        raise node.error(f"unsupported outbound protocol {protocol!r} (vtwist has: "
                         f"{', '.join(sorted(OUTBOUND_MODULES))})", "protocol")
    outbound = OutboundConfig(protocol=protocol)
    outbound.tag = node.str("tag", "")
    outbound.settings = spec.parse_settings(node.get("settings", {}))
    outbound.stream = stream_settings_parser()(node.get("streamSettings", {}),
                                                inbound=False, transport=transport)
    if node.str("sendThrough", "") not in ("", "0.0.0.0"):
        node.warn("sendThrough is not supported by vtwist and is ignored; connections leave "
                  "from the system's choice of source address")
    if node.has("mux"):
        outbound.mux = parse_mux(node.get("mux"))
    if node.has("proxySettings"):
        proxy = node.get("proxySettings", {})
        outbound.proxy_tag = proxy.str("tag", "")
        if not outbound.proxy_tag:
            raise proxy.error("is required (the tag of the outbound to dial through)", "tag")
        if node.has("streamSettings"):
            node.get("streamSettings", {}).warn(
                "ignored (but for its TLS) while proxySettings is set: the connection to the "
                f"server goes through outbound {outbound.proxy_tag!r}, as in V2Ray 4.34")
        proxy.warn_unknown()
    node.warn_unknown()
    return outbound


def check_proxy_chains(outbounds: list[OutboundConfig], paths: list[str]) -> None:
    """Every ``proxySettings.tag`` names an outbound, and no chain comes back to itself
    (``paths``: each outbound's JSON path)."""
    by_tag = {o.tag: i for i, o in enumerate(outbounds) if o.tag}
    for start, outbound in enumerate(outbounds):
        seen = [start]
        current = outbound
        while current.proxy_tag:
            path = f"{paths[seen[-1]]}.proxySettings.tag"
            nxt = by_tag.get(current.proxy_tag)
            if nxt is None:
                raise ConfigError(path, f"no outbound has tag {current.proxy_tag!r}")
            if nxt in seen:
                chain = " -> ".join(repr(outbounds[i].tag) for i in [*seen, nxt])
                raise ConfigError(path, f"proxySettings chain loops: {chain}")
            seen.append(nxt)
            current = outbounds[nxt]


def warn_duplicate_inbound_tags(inbounds: list[InboundConfig], nodes: list[Node]) -> None:
    """V2Ray 4.34 accepts two inbounds with one tag (its inbound manager keeps the last in
    a map, so the earlier one never listens): vtwist accepts them too, runs both, and warns
    naming both JSON paths."""
    first: dict[str, Node] = {}
    for inbound, node in zip(inbounds, nodes, strict=True):
        if not inbound.tag:
            continue
        if inbound.tag in first:
            node.warn(f"tag {inbound.tag!r} is also {first[inbound.tag].path}'s: both "
                      "listen, routing's inboundTag matches both and the API's tag calls "
                      "reach the first (V2Ray 4.34 starts only the last one)")
        else:
            first[inbound.tag] = node


def parse_config(data: Any, warn: Callable[[str], None] | None = None) -> Config:
    """Validate a whole config (a parsed JSON object) into a :class:`Config`."""
    config = Config()

    def collect(message: str) -> None:
        config.warnings.append(message)
        if warn is not None:
            warn(message)

    root = Node(data, "", collect)
    root.require_object()
    config.log = parse_log(root.get("log", None))
    config.policy = parse_policy(root.get("policy", None))
    transport = root.get("transport", {})
    transport.require_object()
    for key in transport_keys():
        transport.has(key)
    transport.warn_unknown()
    inbound_nodes, outbound_nodes = legacy_sections(root)
    config.inbounds = [parse_inbound(n, transport) for n in inbound_nodes]
    warn_duplicate_inbound_tags(config.inbounds, inbound_nodes)
    config.outbounds = [parse_outbound(n, transport) for n in outbound_nodes]
    if not config.outbounds:
        raise ConfigError("outbounds", "at least one outbound is required")
    tags = [o.tag for o in config.outbounds if o.tag]
    for tag in set(tags):
        if tags.count(tag) > 1:
            raise ConfigError("outbounds", f"duplicate outbound tag {tag!r}")
    check_proxy_chains(config.outbounds, [n.path for n in outbound_nodes])
    if root.has("stats"):
        root.get("stats", {}).warn_unknown()
        config.stats = True
    if root.has("api"):
        config.api = parse_api(root.get("api", {}))
        if config.api.tag in tags:
            raise ConfigError("api.tag", f"an outbound is tagged {config.api.tag!r} too")
    if root.has("metrics"):
        config.metrics = parse_metrics(root.get("metrics", {}))
    route_tags = tags + [config.api.tag] if config.api is not None else tags
    if root.has("reverse"):
        config.reverse = parse_reverse(root.get("reverse", {}))
        for portal in config.reverse.portals:
            if portal.tag in route_tags:
                raise ConfigError("reverse.portals",
                                  f"an outbound is tagged {portal.tag!r} too")
        route_tags = route_tags + [p.tag for p in config.reverse.portals]
    config.routing = routing_parser()(root.get("routing", None), route_tags)
    config.dns = dns_parser()(root.get("dns", None))
    api_inbounds = config.api_inbound_tags()
    for inbound, inbound_node in zip(config.inbounds, inbound_nodes, strict=True):
        if inbound.tag in api_inbounds and "listen" not in inbound_node.value:
            inbound.listen = "127.0.0.1"  # the API has no authentication: local by default
    for section in UNSUPPORTED_SECTIONS:
        if root.has(section):
            collect(f"{section}: not supported by vtwist yet, ignored")
    root.warn_unknown()
    return config
