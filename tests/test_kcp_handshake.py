"""An mKCP client to a server that is not there fails within the handshake deadline and
says why; an ICMP refusal before any answer fails it at once, after the first answer it
is ignored; a lossy link that answers late still connects."""

from __future__ import annotations

import socket
import time
from typing import Any

from twisted.internet import defer, error, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase

from tests.netutil import free_port, wait_until
from vtwist.testing.doubles import LogCapture
from vtwist.testing.udprelay import Impairment, UDPImpairmentRelay
from vtwist.transport.kcp.endpoints import KCPClientEndpoint, KCPServerEndpoint


class _Client(Protocol):
    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason: Any = None
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(b"hello")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        self.lost.callback(None)


class _Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class KCPHandshakeTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.capture = LogCapture("vtwist.transport.kcp")
        self.addCleanup(self.capture.stop)

    def warnings(self) -> list[str]:
        return self.capture.lines(LogLevel.warn)

    async def dial(self, port: int, handshake: float | None = 4.0) -> _Client:
        endpoint = KCPClientEndpoint(reactor, "127.0.0.1", port, handshake=handshake,
                                     linger=0.5)
        return await endpoint.connect(Factory.forProtocol(_Client))

    async def serve_echo(self) -> Any:
        port = await KCPServerEndpoint(reactor, 0, "127.0.0.1").listen(
            Factory.forProtocol(_Echo))
        self.addCleanup(port.stopListening)
        return port

    @defer.inlineCallbacks
    def test_silent_peer_times_out(self) -> Any:
        """A UDP port that swallows everything (no ICMP, no answer): the session fails
        within the deadline with one warning saying what to check."""
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        started = time.monotonic()
        client = yield defer.ensureDeferred(self.dial(silent.getsockname()[1], handshake=1.0))
        yield client.lost
        self.assertLess(time.monotonic() - started, 5)
        self.assertIsInstance(client.reason.value, error.TimeoutError)
        [line] = self.warnings()
        self.assertIn(f"mKCP to 127.0.0.1:{silent.getsockname()[1]}: no answer within 1 s",
                      line)

    @defer.inlineCallbacks
    def test_icmp_refusal_before_answer(self) -> Any:
        """Nothing bound at the port: the kernel's ICMP port unreachable is a refusal, at
        once (well within the deadline)."""
        started = time.monotonic()
        client = yield defer.ensureDeferred(self.dial(free_port(udp_too=True), handshake=30))
        yield client.lost
        self.assertLess(time.monotonic() - started, 5)
        self.assertIsInstance(client.reason.value, error.ConnectionRefusedError)
        [line] = self.warnings()
        self.assertIn("refused (ICMP port unreachable)", line)

    @defer.inlineCallbacks
    def test_icmp_after_answer_ignored(self) -> Any:
        """Once the server answered, its port going away (every send draws an ICMP port
        unreachable, no TERMINATE came) does not end the session at once: the peer may
        come back, as V2Ray assumes."""
        server = yield defer.ensureDeferred(self.serve_echo())
        relay = UDPImpairmentRelay(reactor, ("127.0.0.1", server.getHost().port),
                                   upstream=Impairment(), downstream=Impairment())
        relay_port = relay.start()
        client = yield defer.ensureDeferred(self.dial(relay_port))
        yield wait_until(lambda: client.received == b"hello", "no echo", 10)
        yield relay.stop()
        for _ in range(5):
            client.transport.write(b"more")
            yield defer.ensureDeferred(_sleep(0.2))
        self.assertFalse(client.lost.called, client.reason)
        self.assertEqual(self.warnings(), [])
        client.transport.abortConnection()
        yield client.lost

    @defer.inlineCallbacks
    def test_lossy_late_answer_connects(self) -> Any:
        """Through a relay that delays each way by 0.8 s and loses a third of the
        datagrams, the first answer comes late but within the deadline: it connects."""
        server = yield defer.ensureDeferred(self.serve_echo())
        relay = UDPImpairmentRelay(reactor, ("127.0.0.1", server.getHost().port),
                                   upstream=Impairment(loss=0.33, delay=0.8),
                                   downstream=Impairment(loss=0.33, delay=0.8), seed=3)
        relay_port = relay.start()
        self.addCleanup(relay.stop)
        client = yield defer.ensureDeferred(self.dial(relay_port))
        yield wait_until(lambda: client.received == b"hello", "no echo", 30)
        self.assertEqual(self.warnings(), [])
        client.transport.abortConnection()
        yield client.lost


async def _sleep(seconds: float) -> None:
    from twisted.internet import task

    await task.deferLater(reactor, seconds, lambda: None)


class _Socks(Protocol):
    """A SOCKS5 CONNECT to 127.0.0.1:9, then a request; records when it is closed."""

    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x09"
                             b"GET / HTTP/1.0\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class KCPThroughVMessTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_vmess_over_kcp_to_nothing(self) -> Any:
        """curl's view: a SOCKS client through VMess over mKCP to a server that is not there
        is closed within the handshake deadline (not after 45 s), and the log says why
        once."""
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        from tests.services import start_service

        capture = LogCapture("vtwist")
        self.addCleanup(capture.stop)
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        socks_port = free_port()
        yield start_service({
            "inbounds": [{"tag": "in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": socks_port}],
            "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": silent.getsockname()[1],
                "users": [{"id": "b831381d-6324-4d53-ad4f-8cda48b30811"}]}]},
                "streamSettings": {"network": "kcp"}}]}, self)
        started = time.monotonic()
        client = _Socks()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", socks_port), client)
        yield client.lost
        self.assertLess(time.monotonic() - started, 8)
        warnings = capture.lines(LogLevel.warn)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("no answer within 4 s", warnings[0])
