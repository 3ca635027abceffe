"""Test doubles for the tunnel service: an outbound whose connections and UDP sessions a test
drives by hand, and a tunnel service that records what inbounds ask of it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.testing.doubles import HalfCloseTransport
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.relay import RelayProtocol
from vtwist.tunnel.service import TunnelService


class PendingConnect:
    """One connection attempt the fake outbound received."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self.cancelled = False
        self.factory: Any = None
        self.deferred: Deferred[Any] = Deferred(self._cancel)
        self.protocol: Any = None
        self.transport: HalfCloseTransport | None = None

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled = True

    def succeed(self, bound: tuple[str, int] = ("10.0.0.5", 40000)) -> Any:
        """Connect: build the protocol on a fresh transport and fire the Deferred."""
        self.protocol = self.factory.buildProtocol(None)
        self.transport = HalfCloseTransport(host=bound, peer=("10.9.9.9", 80))
        self.protocol.makeConnection(self.transport)
        self.deferred.callback(self.protocol)
        return self.protocol

    def fail(self, error: Exception) -> None:
        """The connection attempt fails with ``error``."""
        self.deferred.errback(Failure(error))


class _Endpoint:
    def __init__(self, pending: PendingConnect) -> None:
        self.pending = pending

    def connect(self, factory: Any) -> Deferred[Any]:
        self.pending.factory = factory
        return self.pending.deferred


@implementer(IPacketSession)
class FakePacketSession:
    """Records datagrams sent; ``reply`` plays one back."""

    def __init__(self, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None]) -> None:
        self.onPacket = onPacket
        self.onClose = onClose
        self.sent: list[tuple[bytes, Destination]] = []
        self.closed = False

    def send(self, data: bytes, destination: Destination) -> None:
        self.sent.append((bytes(data), destination))

    def close(self) -> None:
        self.closed = True


@implementer(IOutbound)
class FakeOutbound:
    """An outbound whose TCP connections and UDP sessions the test drives by hand."""

    def __init__(self, tag: str = "out") -> None:
        self.tag = tag
        self.connects: list[PendingConnect] = []
        self.sessions: list[FakePacketSession] = []

    def endpointFor(self, destination: Destination) -> _Endpoint:
        pending = PendingConnect(destination)
        self.connects.append(pending)
        return _Endpoint(pending)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> FakePacketSession:
        session = FakePacketSession(onPacket, onClose)
        self.sessions.append(session)
        return session


class RecordingTunnels(TunnelService):
    """A real tunnel service over a :class:`FakeOutbound`, whose :meth:`connect` calls are
    recorded as ``(destination, keywords, Deferred)`` for the test to fire."""

    def __init__(self, clock: IReactorTime, outbound: FakeOutbound | None = None) -> None:
        self.outbound = outbound or FakeOutbound()
        super().__init__(Dispatcher([self.outbound]), clock)
        self.connects: list[tuple[Destination, dict[str, Any], Deferred[RelayProtocol]]] = []

    @property
    def sessions(self) -> list[FakePacketSession]:
        """The UDP sessions opened through the outbound."""
        return self.outbound.sessions

    def connect(self, destination: Destination, **kw: Any) -> Deferred[RelayProtocol]:
        """Record the request; the test fires the Deferred."""
        d: Deferred[RelayProtocol] = Deferred()
        self.connects.append((destination, kw, d))
        return d
