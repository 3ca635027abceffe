"""streamSettings: which transport (tcp, kcp, ws) and security (tls) a connection rides.

``parse_stream_settings`` validates the JSON; ``server_endpoint`` / ``client_endpoint`` build
the layered endpoints: base transport (tcp or kcp), then TLS, then the HTTP header disguise or
WebSocket, exactly as V2Ray stacks them. Each layer is an ordinary Twisted endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint

from vtwist.address import parse_ip
from vtwist.config.node import Node

NETWORKS = {"tcp": "tcp", "kcp": "kcp", "mkcp": "kcp", "ws": "ws", "websocket": "ws"}
UNSUPPORTED_NETWORKS = ("http", "h2", "domainsocket", "quic", "grpc")


@dataclass
class StreamSettings:
    """Validated streamSettings. Transport-specific parts are the owning module's types."""

    network: str = "tcp"
    security: str = "none"
    tcp: Any = None  # vtwist.transport.tcp.TCPSettings
    kcp: Any = None  # vtwist.transport.kcp.config.KCPConfig
    ws: Any = None  # vtwist.transport.ws.WSSettings
    tls: Any = None  # vtwist.transport.tls.TLSSettings

    @property
    def accept_proxy_protocol(self) -> bool:
        """True when the inbound expects a PROXY protocol header first."""
        part = self.ws if self.network == "ws" else self.tcp
        return bool(getattr(part, "accept_proxy_protocol", False))


def v2ray_string_list(node: Node, key: str) -> list[str]:
    """V2Ray's StringList at ``key``: an array of strings, or one string split at commas."""
    item = node.get(key, [])
    if isinstance(item.value, str):
        return item.value.split(",")
    return [i.as_str() for i in item.items()]


def parse_stream_settings(node: Node, inbound: bool,
                          transport: Node | None = None) -> StreamSettings:
    """Validate a ``streamSettings`` object (``node`` may wrap None for the default).

    ``transport`` is the top-level ``transport`` object: like V2Ray, its ``tcpSettings``,
    ``kcpSettings`` and ``wsSettings`` apply where the stream gives none of its own.
    """
    if node.value is None:
        node = Node({}, node.path, node._warn)

    def part(name: str) -> Node:
        if node.has(name) or transport is None or not transport.has(name):
            return node.get(name, {})
        return transport.get(name, {})

    network_name = node.str("network", "tcp", lower=True)
    if network_name in UNSUPPORTED_NETWORKS:
        raise node.error(f"network {network_name!r} is not supported by vtwist", "network")
    if network_name not in NETWORKS:
        raise node.error(
            f"expected one of tcp, kcp, mkcp, ws, got {network_name!r}", "network")
    settings = StreamSettings(network=NETWORKS[network_name])
    settings.security = node.str("security", "none", lower=True)
    if settings.security == "":
        settings.security = "none"
    if settings.security == "xtls":
        raise node.error("security 'xtls' is not supported by vtwist", "security")
    if settings.security not in ("none", "tls"):
        raise node.error(f"expected none or tls, got {settings.security!r}", "security")

    from vtwist.transport import tcp

    settings.tcp = tcp.parse_tcp_settings(part("tcpSettings"), inbound)
    if settings.network == "kcp":
        from vtwist.transport.kcp import config as kcp_config

        settings.kcp = kcp_config.parse_kcp_settings(part("kcpSettings"))
    else:
        node.has("kcpSettings")
    if settings.network == "ws":
        from vtwist.transport import ws

        settings.ws = ws.parse_ws_settings(part("wsSettings"), inbound)
    else:
        node.has("wsSettings")
    if settings.security == "tls":
        from vtwist.transport import tls

        settings.tls = tls.parse_tls_settings(node.get("tlsSettings", {}), inbound)
    else:
        node.has("tlsSettings")
    for ignored in ("sockopt", "httpSettings", "quicSettings", "dsSettings", "grpcSettings"):
        node.has(ignored)
    node.warn_unknown()
    return settings


def server_endpoint(reactor: Any, listen: str, port: int,
                    stream: StreamSettings) -> IStreamServerEndpoint:
    """The layered server endpoint for an inbound listening on ``listen:port``."""
    if stream.network == "kcp":
        from vtwist.transport.kcp.endpoints import KCPServerEndpoint

        endpoint: IStreamServerEndpoint = KCPServerEndpoint(reactor, port, listen, stream.kcp)
    else:
        ip = parse_ip(listen)
        if ip is not None and ip.version == 6:
            endpoint = TCP6ServerEndpoint(reactor, port, interface=str(ip))
        else:
            endpoint = TCP4ServerEndpoint(reactor, port, interface=listen)
        if stream.accept_proxy_protocol:
            from twisted.protocols.haproxy import proxyEndpoint

            endpoint = proxyEndpoint(endpoint)
    if stream.security == "tls":
        from vtwist.transport import tls

        # V2Ray's defaults: h2 on tcp, h2 and http/1.1 on mKCP; a WebSocket server can
        # only speak http/1.1 (V2Ray's offers h2 too, which a ws client never takes).
        alpn = {"ws": ["http/1.1"], "tcp": ["h2"]}.get(stream.network, ["h2", "http/1.1"])
        endpoint = tls.wrap_server_endpoint(endpoint, stream.tls, default_alpn=alpn)
    if stream.network == "ws":
        from vtwist.transport import ws

        endpoint = ws.WebSocketServerEndpoint(endpoint, stream.ws)
    elif stream.network == "tcp" and stream.tcp.header_type == "http":
        from vtwist.transport import tcp

        endpoint = tcp.HTTPHeaderServerEndpoint(endpoint, stream.tcp)
    return endpoint


def client_endpoint(reactor: Any, host: str, port: int,
                    stream: StreamSettings) -> IStreamClientEndpoint:
    """The layered client endpoint that reaches a server at ``host:port``."""
    if stream.network == "kcp":
        from vtwist.transport.kcp.endpoints import KCPClientEndpoint

        endpoint: IStreamClientEndpoint = KCPClientEndpoint(reactor, host, port, stream.kcp)
    else:
        from vtwist.transport.tcp import tcp_client_endpoint

        endpoint = tcp_client_endpoint(reactor, host, port)
    if stream.security == "tls":
        from vtwist.transport import tls

        # As V2Ray's dialers: http/1.1 for WebSocket, h2 and http/1.1 otherwise.
        alpn = ["http/1.1"] if stream.network == "ws" else ["h2", "http/1.1"]
        endpoint = tls.wrap_client_endpoint(reactor, endpoint, host, stream.tls,
                                            default_alpn=alpn)
    if stream.network == "ws":
        from vtwist.transport import ws

        endpoint = ws.WebSocketClientEndpoint(
            endpoint, host, port, stream.ws, secure=stream.security == "tls")
    elif stream.network == "tcp" and stream.tcp.header_type == "http":
        from vtwist.transport import tcp

        endpoint = tcp.HTTPHeaderClientEndpoint(endpoint, stream.tcp)
    return endpoint
