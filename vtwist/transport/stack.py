"""The layered endpoints a StreamSettings asks for, exactly as V2Ray stacks them.

Base network (tcp, kcp ...), then TLS, then the network's own layer (WebSocket, the HTTP
header disguise). Each layer is an ordinary Twisted endpoint; what each network contributes
comes from :mod:`vtwist.transport.registry`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint

from vtwist.transport import registry, tls
from vtwist.transport.settings import StreamSettings


def _network(stream: StreamSettings) -> registry.Network:
    network = registry.lookup(stream.network)
    if network is None:
        raise ValueError(f"network {stream.network!r} is not registered "
                         f"(vtwist has: {', '.join(registry.names())})")
    return network


def server_endpoint(reactor: Any, listen: str, port: int,
                    stream: StreamSettings | None) -> IStreamServerEndpoint:
    """The layered server endpoint for an inbound listening on ``listen:port``."""
    stream = stream or StreamSettings()
    network = _network(stream)
    return wrap_server(network.server_endpoint(reactor, listen, port, stream), stream)


def wrap_server(endpoint: IStreamServerEndpoint,
                stream: StreamSettings) -> IStreamServerEndpoint:
    """What goes above a server's base endpoint: TLS, then the network's layer."""
    network = _network(stream)
    if stream.security == "tls":
        endpoint = tls.wrap_server_endpoint(endpoint, stream.tls,
                                            default_alpn=list(network.server_alpn))
    return network.wrap_server(endpoint, stream)


def client_endpoint(reactor: Any, host: str, port: int,
                    stream: StreamSettings | None) -> IStreamClientEndpoint:
    """The layered client endpoint that reaches a server at ``host:port``."""
    stream = stream or StreamSettings()
    network = _network(stream)
    return wrap_client(reactor, network.client_endpoint(reactor, host, port, stream),
                       host, port, stream)


def wrap_client(reactor: Any, endpoint: IStreamClientEndpoint, host: str, port: int,
                stream: StreamSettings) -> IStreamClientEndpoint:
    """What goes above a client's base endpoint: TLS, then the network's layer."""
    network = _network(stream)
    if stream.security == "tls":
        endpoint = tls.wrap_client_endpoint(reactor, endpoint, host, stream.tls,
                                            default_alpn=list(network.client_alpn))
    return network.wrap_client(endpoint, host, port, stream)
