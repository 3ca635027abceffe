"""wsSettings: plain data and its parser (no Twisted)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.config.node import Node


@dataclass
class WSSettings:
    """Validated ``wsSettings``."""

    path: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)  # without Host
    host: str | None = None
    accept_proxy_protocol: bool = False


def normalize_path(path: str) -> str:
    """V2Ray's GetNormalizedPath: empty is "/", a leading "/" is added."""
    if not path:
        return "/"
    return path if path.startswith("/") else "/" + path


def parse_ws_settings(node: Node, inbound: bool) -> WSSettings:
    """Validate ``wsSettings`` (``Path`` is V2Ray's old misspelling of ``path``)."""
    node = node.or_empty()
    settings = WSSettings()
    path = node.str("path", "")
    if not path:
        path = node.str("Path", "")
    settings.path = normalize_path(path)
    headers = node.get("headers", {})
    for key in headers.keys():
        value = headers.get(key).as_str()
        if key.lower() == "host":
            settings.host = value
        else:
            settings.headers.append((key, value))
    settings.accept_proxy_protocol = node.bool("acceptProxyProtocol", False)
    if settings.accept_proxy_protocol and not inbound:
        node.warn("acceptProxyProtocol only applies to inbounds; ignored")
    for unsupported in ("maxEarlyData", "earlyDataHeaderName", "useBrowserForwarding"):
        if node.has(unsupported):
            node.warn(f"{unsupported} is not supported (not in V2Ray 4.34); ignored")
    node.warn_unknown()
    return settings
