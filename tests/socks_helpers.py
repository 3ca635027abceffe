"""Test doubles shared by the SOCKS tests: an outbound whose connections the test controls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from tests import fakes
from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession


class HalfCloseTransport(fakes.HalfCloseTransport):
    """:class:`tests.fakes.HalfCloseTransport` with a local SOCKS server's addresses."""

    def __init__(self, host: tuple[str, int] = ("127.0.0.1", 1080),
                 peer: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        super().__init__(host, peer)


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


class LogCapture:
    """Collects vtwist log events while installed (call ``stop`` in cleanup)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._observe)

    def _observe(self, event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith("vtwist"):
            self.events.append(event)

    def stop(self) -> None:
        globalLogPublisher.removeObserver(self._observe)

    def lines(self, level: LogLevel = LogLevel.info) -> list[str]:
        """Formatted vtwist lines at ``level`` or above, without the normal accepted lines."""
        from twisted.logger import formatEvent

        out = []
        for event in self.events:
            if event.get("log_level", LogLevel.debug) < level:
                continue
            text = formatEvent(event)
            if event.get("log_namespace") == "vtwist.access" and " accepted " in text:
                continue
            out.append(text)
        return out

    def failures(self) -> list[Any]:
        """Events that carry a Failure (a traceback would be printed)."""
        return [e for e in self.events if "log_failure" in e]
