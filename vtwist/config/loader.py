"""Load and validate V2Ray 4.x JSON configs (comments allowed, as V2Ray allows them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from vtwist.config.errors import ConfigError
from vtwist.config.model import Config, InboundConfig, LogConfig, OutboundConfig
from vtwist.config.node import Node
from vtwist.config.registry import (
    INBOUND_MODULES,
    OUTBOUND_MODULES,
    inbound_spec,
    outbound_spec,
    routing_parser,
    stream_settings_parser,
    transport_keys,
)
from vtwist.policy import LevelPolicy, Policy

LOG_LEVELS = ("debug", "info", "warning", "error", "none")
# Top-level sections V2Ray knows but vtwist does not act on yet: a warning, not an error.
UNSUPPORTED_SECTIONS = ("dns", "stats", "api", "reverse", "fakedns",
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
    try:
        return json.loads(strip_comments(text))
    except json.JSONDecodeError as e:
        raise ConfigError("", f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
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
        )
        level_node.warn_unknown(("statsUserUplink", "statsUserDownlink"))
    node.has("system")
    node.warn_unknown()
    return Policy(levels)


def parse_inbound(node: Node, transport: Node | None = None) -> InboundConfig:
    """One ``inbounds[]`` entry."""
    protocol = node.str("protocol", lower=True)
    spec = inbound_spec(protocol)
    if spec is None:
        raise node.error(f"unsupported inbound protocol {protocol!r} (vtwist has: "
                         f"{', '.join(sorted(INBOUND_MODULES))})", "protocol")
    inbound = InboundConfig(protocol=protocol, ports=parse_ports(node.get("port")))
    inbound.listen = node.str("listen", "0.0.0.0") or "0.0.0.0"
    inbound.tag = node.str("tag", "")
    inbound.settings = spec.parse_settings(node.get("settings", {}))
    inbound.stream = stream_settings_parser()(node.get("streamSettings", {}),
                                               inbound=True, transport=transport)
    if node.has("sniffing"):
        node.warn("sniffing is not supported by vtwist and is ignored")
    node.has("allocate")
    node.warn_unknown()
    return inbound


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
    if node.has("mux") and node.get("mux").bool("enabled", False):
        node.warn("mux is not supported by vtwist; connections are not multiplexed")
    node.has("proxySettings")
    node.warn_unknown()
    return outbound


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
    config.inbounds = [parse_inbound(n, transport) for n in root.get("inbounds", []).items()]
    config.outbounds = [parse_outbound(n, transport) for n in root.get("outbounds", []).items()]
    if not config.outbounds:
        raise ConfigError("outbounds", "at least one outbound is required")
    tags = [o.tag for o in config.outbounds if o.tag]
    for tag in set(tags):
        if tags.count(tag) > 1:
            raise ConfigError("outbounds", f"duplicate outbound tag {tag!r}")
    config.routing = routing_parser()(root.get("routing", None), tags)
    for section in UNSUPPORTED_SECTIONS:
        if root.has(section):
            collect(f"{section}: not supported by vtwist yet, ignored")
    root.warn_unknown()
    return config
