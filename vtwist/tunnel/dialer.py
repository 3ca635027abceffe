"""How an outbound reaches its server: a *dialer* ``(host, port) -> IStreamClientEndpoint``.

Directly, over its streamSettings (:func:`direct_dialer`), or, with ``proxySettings``,
through another outbound (:func:`chained_dialer`): the connection to the server is that
outbound's ``endpointFor(tcp:host:port)``. V2Ray 4.34 (``app/proxyman/outbound/handler.go``
``Dial``) then ignores the streamSettings' network but still puts their TLS on top, and so
does vtwist. :func:`build_outbounds` builds a config's outbounds so that every outbound a
chain goes through exists before the outbounds that use it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint

from vtwist.address import Destination
from vtwist.config.model import OutboundConfig
from vtwist.config.registry import outbound_spec
from vtwist.transport.settings import StreamSettings
from vtwist.transport.stack import client_endpoint
from vtwist.transport.tls.layer import TLS

#: ``(host, port) -> IStreamClientEndpoint``: how an outbound reaches its server.
Dialer = Callable[[str, int], IStreamClientEndpoint]


def direct_dialer(reactor: Any, stream: StreamSettings | None,
                  resolver: Any = None) -> Dialer:
    """Dial the server over ``stream`` (tcp/kcp/ws, TLS), as without proxySettings; a
    server name is resolved by ``resolver`` (the config's, see vtwist.dns) when given."""
    def dial(host: str, port: int) -> IStreamClientEndpoint:
        return client_endpoint(reactor, host, port, stream, resolver)
    return dial


class ChainedDialer:
    """Dial the server through the outbound ``through`` (an IOutbound); TLS from ``stream``
    (when its security is tls) goes on top, the rest of ``stream`` is not used.

    Datagrams to a server (a Shadowsocks or SOCKS outbound's UDP) take ``through``'s packet
    path too: V2Ray 4.34's ``Dial`` hands a ``udp:`` destination to the proxy outbound as
    it does a ``tcp:`` one. See :func:`packet_path`.
    """

    def __init__(self, reactor: Any, through: Any, stream: StreamSettings | None) -> None:
        self.reactor = reactor
        #: the outbound every connection (and datagram) to a server goes through
        self.through = through
        self.stream = stream

    def __call__(self, host: str, port: int) -> IStreamClientEndpoint:
        """An endpoint to ``host:port`` through ``through`` (TLS on top, if configured)."""
        endpoint = self.through.endpointFor(Destination.tcp(host, port))
        if self.stream is not None:
            endpoint = TLS.wrapClient(endpoint, self.stream, host, port, self.reactor)
        return endpoint  # type: ignore[no-any-return]


def chained_dialer(reactor: Any, through: Any, stream: StreamSettings | None) -> Dialer:
    """A :class:`ChainedDialer`: the server through the outbound ``through``."""
    return ChainedDialer(reactor, through, stream)


def packet_path(dialer: Any) -> Any:
    """The outbound (an IOutbound) that datagrams to a server go through when ``dialer``
    is chained (proxySettings): open a ``packetSession`` on it and send to
    ``Destination.udp(server, port)``. None: the outbound sends its datagrams itself."""
    return getattr(dialer, "through", None)


def build_outbounds(configs: Sequence[OutboundConfig], ctx: Any,
                    reuse: Mapping[int, Any] | None = None) -> list[Any]:
    """Every outbound of ``configs`` (in their order), each built after the outbound its
    ``proxy_tag`` names; ``ctx.outbounds`` maps the tags to the built outbounds. The loader
    has already refused unknown tags and loops. ``reuse`` maps ``id(config)`` to an
    outbound already built for it (a reload keeps unchanged outbounds)."""
    by_tag = {c.tag: c for c in configs if c.tag}
    built: dict[int, Any] = dict(reuse or {})
    for config in configs:
        if id(config) in built and config.tag:
            ctx.outbounds[config.tag] = built[id(config)]

    def build(config: OutboundConfig) -> Any:
        if id(config) not in built:
            if config.proxy_tag:
                build(by_tag[config.proxy_tag])
            outbound = outbound_spec(config.protocol).build(config, ctx)  # type: ignore[union-attr]
            built[id(config)] = outbound
            if config.tag:
                ctx.outbounds[config.tag] = outbound
        return built[id(config)]

    return [build(c) for c in configs]
