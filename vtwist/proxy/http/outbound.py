"""The ``http`` outbound at run time: TCP through :class:`HTTPConnectEndpoint`; no UDP (V2Ray's
http outbound has none), so its packet session drops datagrams and says so once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.http.client import HTTPConnectEndpoint
from vtwist.proxy.upstream import ServerPicker, UpstreamServer, UpstreamSettings
from vtwist.tunnel.dialer import direct_dialer

log = Logger(namespace="vtwist.http.outbound")


@implementer(IStreamClientEndpoint)
class _NoUDP:
    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        return defer.fail(ConnectError("UDP is not supported by the http outbound"))


@implementer(IPacketSession)
class DroppingPacketSession:
    """Drops every datagram; logs the first one."""

    def __init__(self, tag: str, onClose: Callable[[], None]) -> None:
        self.tag = tag
        self.onClose = onClose
        self.logged = False

    def send(self, data: bytes, destination: Destination) -> None:
        """Dropped (one log line per session)."""
        if not self.logged:
            self.logged = True
            log.info("http outbound {tag}: UDP to {dest} dropped (the http outbound carries "
                     "no UDP)", tag=self.tag or "(untagged)", dest=destination)

    def close(self) -> None:
        """Nothing to free."""


def http1_only(stream: Any) -> Any:
    """``stream`` with TLS offering only ``http/1.1`` when its ALPN is left at the default.

    V2Ray's client speaks HTTP/2 CONNECT when TLS negotiates ``h2``; vtwist speaks HTTP/1.1
    only, so it does not offer ``h2`` (an explicit ``alpn`` is kept, and a proxy that then
    picks ``h2`` fails the CONNECT with a log line).
    """
    if stream is None or stream.security != "tls" or stream.tls is None or stream.tls.alpn:
        return stream
    return replace(stream, tls=replace(stream.tls, alpn=["http/1.1"]))


@implementer(IOutbound)
class HTTPOutbound:
    """Sends TCP through HTTP proxies with CONNECT (servers in turn, a random user of each).

    Like V2Ray's, the CONNECT has no deadline of its own: the tunnel's connect timeout
    bounds it (an upstream proxy may take a while to reach the destination)."""

    def __init__(self, reactor: Any, tag: str, settings: UpstreamSettings, stream: Any = None,
                 policy: Policy = DEFAULT_POLICY,
                 dialer: Callable[[str, int], Any] | None = None) -> None:
        self.reactor = reactor
        self.tag = tag
        self.settings = settings
        self.stream = http1_only(stream)
        #: ``(host, port) -> endpoint`` to a server: over the stream, or through another
        #: outbound (proxySettings)
        self.dialer = dialer or direct_dialer(reactor, self.stream)
        self.policy = policy
        self.picker = ServerPicker(settings.servers)

    def transportEndpoint(self, server: UpstreamServer) -> IStreamClientEndpoint:
        """The endpoint that reaches ``server``."""
        return self.dialer(server.address, server.port)  # type: ignore[no-any-return]

    def endpointFor(self, destination: Destination) -> IStreamClientEndpoint:
        """An HTTPConnectEndpoint through the next server to ``destination``."""
        if destination.network != "tcp":
            return _NoUDP()
        server = self.picker.pick()
        user = server.pick_user()
        lower = self.transportEndpoint(server)
        return HTTPConnectEndpoint(
            lower, destination, reactor=self.reactor,
            credentials=(user.user, user.password) if user is not None else None,
            timeout=None)  # as V2Ray: no deadline of its own; the tunnel's connect timeout

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> DroppingPacketSession:
        """No UDP: a session that drops datagrams."""
        return DroppingPacketSession(self.tag, onClose)


def build_outbound(outbound: Any, ctx: Any) -> HTTPOutbound:
    """The registry's builder: an HTTPOutbound from its config."""
    outbound = replace(outbound, stream=http1_only(outbound.stream))  # the dialer's too
    return HTTPOutbound(ctx.reactor, outbound.tag, outbound.settings, outbound.stream,
                        ctx.policy, ctx.dialer(outbound))
