"""The layered endpoints a StreamSettings asks for, exactly as V2Ray stacks them.

Base network (tcp, kcp ...), then the TLS layer, then the network's own layer (WebSocket,
the HTTP header disguise). Each layer is an :class:`~vtwist.interfaces.IStreamLayer` giving
ordinary Twisted endpoints; what each network contributes comes from
:mod:`vtwist.transport.registry`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint

from vtwist.address import parse_ip
from vtwist.dns.endpoint import ResolvingEndpoint
from vtwist.interfaces import IStreamLayer
from vtwist.transport import registry
from vtwist.transport.settings import StreamSettings
from vtwist.transport.tls.layer import TLS


def layers(stream: StreamSettings) -> tuple[IStreamLayer, ...]:
    """The layers above the base endpoint, lowest first: TLS, then the network's own.

    Each one leaves the endpoint unchanged when ``stream`` does not ask for it.
    """
    network = registry.require(stream.network)
    below = () if network.tls_inside else (TLS,)
    network_layer = network.stream_layer
    return below if network_layer is None else (*below, network_layer)


def server_endpoint(reactor: Any, listen: str, port: int,
                    stream: StreamSettings | None) -> IStreamServerEndpoint:
    """The layered server endpoint for an inbound listening on ``listen:port``."""
    stream = stream or StreamSettings()
    network = registry.require(stream.network)
    return wrap_server(network.server_endpoint(reactor, listen, port, stream), stream)


def wrap_server(endpoint: IStreamServerEndpoint,
                stream: StreamSettings) -> IStreamServerEndpoint:
    """What goes above a server's base endpoint: TLS, then the network's layer."""
    for layer in layers(stream):
        endpoint = layer.wrapServer(endpoint, stream)
    return endpoint


#: Networks whose base endpoint dials an IP that :func:`client_endpoint` may resolve first
#: (the layers above still see the name: TLS SNI, the WebSocket Host).
RESOLVED_NETWORKS = ("tcp", "ws", "kcp")


def client_endpoint(reactor: Any, host: str, port: int, stream: StreamSettings | None,
                    resolver: Any = None) -> IStreamClientEndpoint:
    """The layered client endpoint that reaches a server at ``host:port``; a server name
    is resolved by ``resolver`` (the config's vtwist.dns resolver) when one is given."""
    stream = stream or StreamSettings()
    network = registry.require(stream.network)
    if resolver is not None and network.name in RESOLVED_NETWORKS and parse_ip(host) is None:
        def base(ip: str) -> IStreamClientEndpoint:
            return network.client_endpoint(reactor, ip, port, stream)  # type: ignore[no-any-return]
        endpoint: IStreamClientEndpoint = ResolvingEndpoint(resolver, host, base, clock=reactor)
    else:
        endpoint = network.client_endpoint(reactor, host, port, stream)
    return wrap_client(reactor, endpoint, host, port, stream)


def wrap_client(reactor: Any, endpoint: IStreamClientEndpoint, host: str, port: int,
                stream: StreamSettings) -> IStreamClientEndpoint:
    """What goes above a client's base endpoint: TLS, then the network's layer."""
    for layer in layers(stream):
        endpoint = layer.wrapClient(endpoint, stream, host, port, reactor)
    return endpoint
