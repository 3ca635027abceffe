"""wsSettings: plain data and its parser (no Twisted)."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

from vtwist.config.node import Node


@dataclass
class WSSettings:
    """Validated ``wsSettings``."""

    path: str = "/"
    headers: list[tuple[str, str]] = field(default_factory=list)  # without Host
    host: str | None = None
    accept_proxy_protocol: bool = False
    #: Up to this many bytes of the first write ride in the upgrade request (0: off).
    max_early_data: int = 0
    #: The header carrying them; "" puts them after the path (v2fly's form).
    early_data_header: str = ""


#: The header Xray's ``?ed=N`` path query and its servers use for early data.
EARLY_DATA_PROTOCOL_HEADER = "Sec-WebSocket-Protocol"
#: The largest ``maxEarlyData`` accepted: the base64 must fit an 8 KiB request header.
MAX_EARLY_DATA = 4096


def normalize_path(path: str) -> str:
    """V2Ray's GetNormalizedPath: empty is "/", a leading "/" is added."""
    if not path:
        return "/"
    return path if path.startswith("/") else "/" + path


def split_early_data_query(path: str) -> tuple[str, int | None]:
    """Xray's ``/path?ed=2048``: the path without ``ed``, and its value (None: not given)."""
    base, sep, query = path.partition("?")
    if not sep:
        return path, None
    pairs = parse_qsl(query, keep_blank_values=True)
    values = [v for k, v in pairs if k == "ed"]
    if not values:
        return path, None
    rest = urlencode([(k, v) for k, v in pairs if k != "ed"])
    try:
        size = int(values[0])
    except ValueError:
        size = -1
    return (base + "?" + rest) if rest else base, size


def parse_ws_settings(node: Node, inbound: bool) -> WSSettings:
    """Validate ``wsSettings`` (``Path`` is V2Ray's old misspelling of ``path``)."""
    node = node.or_empty()
    settings = WSSettings()
    path = node.str("path", "")
    if not path:
        path = node.str("Path", "")
    path, query_early = split_early_data_query(path)
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
    settings.max_early_data = node.int("maxEarlyData", 0, lo=0, hi=MAX_EARLY_DATA)
    settings.early_data_header = node.str("earlyDataHeaderName", "")
    if query_early is not None:
        if query_early < 0:
            raise node.error("ed= in the path must be a whole number of bytes", "path")
        if query_early > MAX_EARLY_DATA:
            node.warn(f"path: ed={query_early} is more than vtwist sends in a request header;"
                      f" {MAX_EARLY_DATA} bytes go early, the rest right after the upgrade")
        # Xray's form: the size in the path, the data in Sec-WebSocket-Protocol.
        settings.max_early_data = min(query_early, MAX_EARLY_DATA)
        settings.early_data_header = EARLY_DATA_PROTOCOL_HEADER
    if settings.early_data_header.lower() == "host":
        raise node.error("early data cannot ride in the Host header", "earlyDataHeaderName")
    if node.has("useBrowserForwarding"):
        node.warn("useBrowserForwarding is not supported; ignored")
    node.warn_unknown()
    return settings
