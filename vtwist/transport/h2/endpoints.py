"""Endpoints for tunnels over HTTP/2 streams, and the ``IStreamLayer`` a network names.

:class:`H2ServerEndpoint` listens on an endpoint (TCP, or TLS with ALPN ``h2``; h2c with
prior knowledge without TLS) and builds one application protocol per accepted stream.
:class:`H2ClientEndpoint` opens one stream per ``connect``, reusing HTTP/2 connections to
the same server as V2Ray's client does (``globalDialerMap``): connections are pooled per
reactor, server and streamSettings (:data:`POOLS`), and a new one is dialled when none has
room for another stream. Over TLS the server must agree on ALPN ``h2``.
:func:`close_connections` closes every pooled connection (tests, shutdown).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from h2.errors import ErrorCodes
from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.interfaces import IStreamLayer
from vtwist.transport.h2.connection import H2Protocol, H2Stream
from vtwist.transport.h2.profile import Profile


class H2ServerFactory(Factory):
    """One server :class:`H2Protocol` per connection; streams go to ``wrapped``."""

    noisy = False

    def __init__(self, profile: Profile, wrapped: IProtocolFactory, clock: Any = None) -> None:
        self.profile = profile
        self.wrapped = wrapped
        self.clock = clock

    def startFactory(self) -> None:
        """Start the application's factory too."""
        self.wrapped.doStart()

    def stopFactory(self) -> None:
        """Stop the application's factory too."""
        self.wrapped.doStop()

    def buildProtocol(self, addr: Any) -> H2Protocol:
        """A server connection."""
        return H2Protocol(self.profile, client=False, appFactory=self.wrapped, clock=self.clock)


@implementer(IStreamServerEndpoint)
class H2ServerEndpoint:
    """Serves ``profile``'s tunnels on ``endpoint``."""

    def __init__(self, endpoint: IStreamServerEndpoint, profile: Profile,
                 clock: Any = None) -> None:
        self.endpoint = endpoint
        self.profile = profile
        self.clock = clock

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred:
        """Listen; each accepted stream gets a protocol from ``protocolFactory``."""
        return self.endpoint.listen(H2ServerFactory(self.profile, protocolFactory, self.clock))


class StreamRequest:
    """One ``connect``: the application's factory, the Deferred it got, and its stream once
    opened. Cancelling the Deferred (a connect timeout) resets the stream."""

    def __init__(self, factory: IProtocolFactory) -> None:
        self.factory = factory
        self.stream: H2Stream | None = None
        self.ready: Deferred = Deferred(self._cancel)

    def _cancel(self, ready: Deferred) -> None:
        stream = self.stream
        if stream is not None and not stream.finished and stream.ready is ready:
            stream.ready = None
            stream.reset(ErrorCodes.CANCEL)


class Pool:
    """The HTTP/2 connections to one server (one key of :data:`POOLS`)."""

    def __init__(self, owner: Any = None) -> None:
        self.owner = owner  # kept so that the key's id() stays unique while pooled
        self.connections: list[H2Protocol] = []
        self.waiting: list[StreamRequest] = []
        self.dialing = False
        self.lost: dict[H2Protocol, Deferred] = {}

    def request(self, endpoint: H2ClientEndpoint, request: StreamRequest) -> None:
        """Open a stream on a connection with room, dialling one when none has."""
        for connection in self.connections:
            if connection.canOpenStream():
                request.stream = connection.openStream(request.factory, request.ready)
                return
        self.waiting.append(request)
        if not self.dialing:
            self._dial(endpoint)

    def _dial(self, endpoint: H2ClientEndpoint) -> None:
        self.dialing = True

        def build() -> H2Protocol:
            return H2Protocol(endpoint.profile, client=True, scheme=endpoint.scheme,
                              authority=endpoint.authority, clock=endpoint.clock,
                              onLost=self._lost)

        d = endpoint.endpoint.connect(Factory.forProtocol(build))
        d.addCallbacks(lambda proto: self._connected(endpoint, proto), self._failed)

    def _connected(self, endpoint: H2ClientEndpoint, proto: H2Protocol) -> None:
        self.dialing = False
        if endpoint.require_h2:
            agreed = getattr(proto.transport, "negotiatedProtocol", None)
            if agreed != b"h2":
                proto._loseTransport()
                text = agreed.decode("latin-1") if agreed else "none"
                self._failed(Failure(error.ConnectError(
                    f"{endpoint.profile.name}: the server did not agree on ALPN h2 "
                    f"(got {text})")))
                return
        if not proto.canOpenStream():  # closed (or going away) as soon as it was up
            self._failed(Failure(error.ConnectError(
                f"{endpoint.profile.name}: the server closed the connection at once")))
            return
        self.connections.append(proto)
        self.lost[proto] = Deferred()
        waiting, self.waiting = self.waiting, []
        for request in waiting:
            if not request.ready.called:
                self.request(endpoint, request)

    def _failed(self, reason: Failure) -> None:
        self.dialing = False
        waiting, self.waiting = self.waiting, []
        for request in waiting:
            if not request.ready.called:
                request.ready.errback(reason)

    def _lost(self, proto: H2Protocol) -> None:
        if proto in self.connections:
            self.connections.remove(proto)
        done = self.lost.pop(proto, None)
        if done is not None:
            done.callback(None)

    def close(self) -> Deferred:
        """Close every connection; fires when all are gone."""
        waits = list(self.lost.values())
        for proto in list(self.connections):
            proto.close()
        return defer.gatherResults(waits)


#: Pooled connections by (reactor, host, port, streamSettings) ids.
POOLS: dict[tuple[int, str, int, int], Pool] = {}


def close_connections() -> Deferred:
    """Close every pooled client connection; fires once they are all gone."""
    pools = list(POOLS.values())
    POOLS.clear()
    return defer.gatherResults([pool.close() for pool in pools])


@implementer(IStreamClientEndpoint)
class H2ClientEndpoint:
    """Opens a ``profile`` stream to a server reached through ``endpoint``."""

    def __init__(self, endpoint: IStreamClientEndpoint, profile: Profile, *,
                 scheme: str = "https", authority: str = "", require_h2: bool = False,
                 key: tuple[int, str, int, int] | None = None, owner: Any = None,
                 clock: Any = None) -> None:
        self.endpoint = endpoint
        self.profile = profile
        self.scheme = scheme
        self.authority = authority
        self.require_h2 = require_h2
        self.key = key
        self.owner = owner
        self.clock = clock
        self._pool: Pool | None = None

    def pool(self) -> Pool:
        """The pool this endpoint's streams share (its own when it has no key)."""
        if self.key is None:
            if self._pool is None:
                self._pool = Pool(self)
            return self._pool
        pool = POOLS.get(self.key)
        if pool is None:
            pool = POOLS[self.key] = Pool(self.owner)
        return pool

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        """A new stream; fires with the application protocol (V2Ray's http: after a 200)."""
        request = StreamRequest(protocolFactory)
        self.pool().request(self, request)
        return request.ready


def authority_for(host: str, port: int, default_port: int) -> str:
    """``host[:port]`` as an HTTP authority (IPv6 in brackets)."""
    text = f"[{host}]" if ":" in host else host
    return text if port == default_port else f"{text}:{port}"


@implementer(IStreamLayer)
class H2Layer:
    """A tunnel over HTTP/2 streams above TCP (and TLS), for the network ``name``.

    ``make_profile(settings)`` builds the profile from the network's parsed settings.
    """

    def __init__(self, name: str, make_profile: Callable[[Any], Profile]) -> None:
        self.name = name
        self.make_profile = make_profile

    def wrapServer(self, endpoint: IStreamServerEndpoint, settings: Any) -> IStreamServerEndpoint:
        """``endpoint`` serving the tunnel (h2 over TLS, h2c without)."""
        return H2ServerEndpoint(endpoint,
                                self.make_profile(settings.network_settings.get(self.name)))

    def wrapClient(self, endpoint: IStreamClientEndpoint, settings: Any, host: str, port: int,
                   reactor: Any = None) -> IStreamClientEndpoint:
        """``endpoint`` carrying one stream per connect, on pooled connections."""
        secure = settings.security == "tls"
        server_name = settings.tls.server_name if secure and settings.tls else ""
        return H2ClientEndpoint(
            endpoint, self.make_profile(settings.network_settings.get(self.name)),
            scheme="https" if secure else "http",
            authority=server_name or authority_for(host, port, 443 if secure else 80),
            require_h2=secure, key=(id(reactor), host, port, id(settings)), owner=settings,
            clock=reactor)
