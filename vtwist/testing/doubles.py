"""Test doubles for code written against vtwist: echo and recording protocols, a UDP echo, a
StringTransport that records half-closes, a fake UDP port and a reactor that hands them out,
and log capture.

They work with any test framework; the ones that clean up after themselves take the test case
(anything with ``addCleanup``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = [
    "Collector", "CollectUntilClosed", "Echo", "EchoRecorder", "FakeUDPPort", "FakeUDPReactor",
    "HalfCloseRecorder", "HalfCloseTransport", "LogCapture", "Recorder", "UDPEcho", "log_lines",
]


class _Cleanups(TypingProtocol):
    def addCleanup(self, f: Callable[..., object], *args: Any) -> None: ...


# -- stream protocols --------------------------------------------------------------------------

class Echo(Protocol):
    """Echo server protocol: writes back whatever arrives."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Recorder(Protocol):
    """Keeps what it receives (``data``) and how the connection ended (``lost``)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: Failure | None = None
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost = reason


@implementer(IHalfCloseableProtocol)
class HalfCloseRecorder(Recorder):
    """A :class:`Recorder` that accepts half-closes: ``readLost`` once the peer's FIN came."""

    readLost = False
    writeLost = False

    def readConnectionLost(self) -> None:
        self.readLost = True

    def writeConnectionLost(self) -> None:
        self.writeLost = True


class EchoRecorder(Recorder):
    """A :class:`Recorder` that also echoes."""

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.transport.write(data)


class CollectUntilClosed(Protocol):
    """Writes ``message`` (if any) on connect and collects until the connection ends; ``done``
    then fires with the bytes. With ``hangUpOnData`` it closes after the first answer."""

    def __init__(self, message: bytes = b"", hangUpOnData: bool = False) -> None:
        self.message = message
        self.hangUpOnData = hangUpOnData
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.message:
            self.transport.write(self.message)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.hangUpOnData:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.data)


class Collector(Protocol):
    """Collects received bytes in ``buf``; ``wait(n)`` fires once ``n`` bytes arrived, and
    fails if the connection ends first. ``lost`` fires with ``[reason]`` at the end."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._want = 0
        self._waiter: defer.Deferred[None] | None = None
        self.lost: defer.Deferred[list[Any]] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        self._check()

    def _check(self) -> None:
        if self._waiter is not None and len(self.buf) >= self._want:
            w, self._waiter = self._waiter, None
            w.callback(None)

    def wait(self, n: int) -> defer.Deferred[None]:
        """A Deferred that fires once ``buf`` holds at least ``n`` bytes."""
        self._want = n
        self._waiter = defer.Deferred()
        d = self._waiter
        self._check()
        return d

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback([reason])
        if self._waiter is not None:
            w, self._waiter = self._waiter, None
            w.errback(AssertionError(f"connection lost with {len(self.buf)} bytes: {reason}"))

    async def echo_times(self, count: int, size: int = 1024) -> list[float]:
        """Round-trip times (sorted) of ``count`` echoes of ``size`` random bytes."""
        times = []
        for _ in range(count):
            self.buf.clear()
            t = time.perf_counter()
            self.transport.write(os.urandom(size))
            await self.wait(size)
            times.append(time.perf_counter() - t)
        times.sort()
        return times


# -- datagrams ---------------------------------------------------------------------------------

class UDPEcho(DatagramProtocol):
    """Answers each datagram to its sender, through ``transform`` if given; keeps them in
    ``got``."""

    def __init__(self, transform: Callable[[bytes], bytes] | None = None) -> None:
        self.transform = transform
        self.got: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.got.append(data)
        self.transport.write(data if self.transform is None else self.transform(data), addr)


class FakeUDPPort:
    """An in-memory UDP port: ``written`` keeps ``(data, addr)`` for each write."""

    def __init__(self, protocol: Any = None, interface: str = "127.0.0.1", port: int = 0,
                 maxPacketSize: int = 8192) -> None:
        self.protocol = protocol
        self.interface = interface
        self.port = port
        self.maxPacketSize = maxPacketSize
        self.written: list[tuple[bytes, Any]] = []
        self.listening = True

    def write(self, data: bytes, addr: Any = None) -> None:
        self.written.append((data, addr))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.interface, self.port)

    def stopListening(self) -> None:
        self.listening = False


class FakeUDPReactor(Clock):
    """A :class:`Clock` whose ``listenUDP`` hands out :class:`FakeUDPPort` s (ports 30000,
    30001, ...), kept in ``ports``; with ``fail_listen`` set it raises :class:`OSError`."""

    def __init__(self, first_port: int = 30000) -> None:
        super().__init__()
        self.first_port = first_port
        self.ports: list[FakeUDPPort] = []
        self.fail_listen = False

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> FakeUDPPort:
        if self.fail_listen:
            raise OSError("no sockets left")
        fake = FakeUDPPort(protocol, interface, self.first_port + len(self.ports), maxPacketSize)
        self.ports.append(fake)
        protocol.makeConnection(fake)
        return fake


# -- transports --------------------------------------------------------------------------------

class HalfCloseTransport(StringTransport):
    """A StringTransport that records half-closes in ``writeClosed``.

    ``host``/``peer`` set its addresses (StringTransport's defaults otherwise).
    """

    def __init__(self, host: tuple[str, int] | None = None,
                 peer: tuple[str, int] | None = None) -> None:
        super().__init__(hostAddress=None if host is None else IPv4Address("TCP", *host),
                         peerAddress=None if peer is None else IPv4Address("TCP", *peer))
        self.writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


# -- logs --------------------------------------------------------------------------------------

def log_lines(test: _Cleanups, namespace: str = "") -> list[str]:
    """A list that collects the formatted log lines of namespaces starting with
    ``namespace`` from now until ``test``'s cleanup."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith(namespace):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class LogCapture:
    """Collects the log events of namespaces starting with ``namespace`` while installed
    (call :meth:`stop`, e.g. in a cleanup)."""

    def __init__(self, namespace: str = "vtwist") -> None:
        self.namespace = namespace
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self._observe)

    def _observe(self, event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith(self.namespace):
            self.events.append(event)

    def stop(self) -> None:
        """Stop collecting."""
        globalLogPublisher.removeObserver(self._observe)

    def lines(self, level: LogLevel = LogLevel.info) -> list[str]:
        """Formatted lines at ``level`` or above, without the access log's "accepted" and
        "closed" lines (every relayed connection has them)."""
        out = []
        for event in self.events:
            if event.get("log_level", LogLevel.debug) < level:
                continue
            text = formatEvent(event)
            if event.get("log_namespace") == "vtwist.access" and (
                    " accepted " in text or event.get("status") == "closed"):
                continue
            out.append(text)
        return out

    def failures(self) -> list[dict[str, Any]]:
        """Events that carry a Failure (a traceback would be printed)."""
        return [e for e in self.events if "log_failure" in e]
