"""A VMess client says why its tunnel failed: one warning per failed connection, with the
reason it can infer (refused, no answer, closed before the answer, a forged answer)."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import V2Ray
from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.address import Destination
from vtwist.proxy.vmess.client import NO_ANSWER_HINT, VMessClientEndpoint
from vtwist.proxy.vmess.users import Account
from vtwist.testing.doubles import LogCapture


class _Request(Protocol):
    """Writes a request at once; records what comes back and when the connection ends."""

    def __init__(self) -> None:
        self.lost: defer.Deferred[Any] = defer.Deferred()
        self.received = b""
        self.reason: Any = None

    def connectionMade(self) -> None:
        self.transport.write(b"GET / HTTP/1.0\r\n\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        self.lost.callback(None)


class VMessFailureTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.capture = LogCapture("vtwist.vmess.outbound")
        self.addCleanup(self.capture.stop)

    def warnings(self) -> list[str]:
        return self.capture.lines(LogLevel.warn)

    def connect(self, port: int, answer_timeout: float | None = 4.0,
                user: str | None = None) -> defer.Deferred[Any]:
        endpoint = VMessClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            Account.from_text(user or str(uuid.uuid4()), security="aes-128-gcm"),
            Destination.tcp("127.0.0.1", 9), reactor=reactor, answer_timeout=answer_timeout)
        return endpoint.connect(Factory.forProtocol(_Request))

    @defer.inlineCallbacks
    def test_refused(self) -> Any:
        """Nothing listens at the server's port: one warning naming the server's refusal."""
        with self.assertRaises(ConnectionRefusedError):
            yield self.connect(free_port())
        [line] = self.warnings()
        self.assertIn("cannot reach the server", line)
        self.assertIn("refused", line)

    @defer.inlineCallbacks
    def test_vtwist_server_wrong_id(self) -> Any:
        """vtwist's server holds a refused client silently: the client warns once at the
        deadline that the server did not answer, and says why that usually happens; the
        server logs the refusal."""
        port = free_port()
        server_log = LogCapture("vtwist.access")
        self.addCleanup(server_log.stop)
        yield start_service({
            "inbounds": [{"protocol": "vmess", "listen": "127.0.0.1", "port": port,
                          "settings": {"clients": [{"id": str(uuid.uuid4())}]}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        app = yield self.connect(port, answer_timeout=0.5)
        yield wait_until(lambda: self.warnings(), "no warning", 10)
        [line] = self.warnings()
        self.assertIn(f"vmess to tcp:127.0.0.1:9 via 127.0.0.1:{port}: server did not "
                      f"answer within 0.5 s: {NO_ANSWER_HINT}", line)
        self.assertTrue(any("rejected vmess: unknown user" in x for x in server_log.lines()),
                        server_log.lines())
        app.transport.loseConnection()  # the user gives up: no second warning
        yield app.lost
        self.assertEqual(len(self.warnings()), 1, self.warnings())

    @defer.inlineCallbacks
    def test_v2ray_server_wrong_id(self) -> Any:
        """The real V2Ray 4.34 drains a wrong id and closes at its handshake deadline: the
        client warns once that the server closed without answering."""
        port = free_port()
        v2ray = V2Ray({"log": {"loglevel": "info"},
                       "policy": {"levels": {"0": {"handshake": 1}}},
                       "inbounds": [{"protocol": "vmess", "listen": "127.0.0.1", "port": port,
                                     "settings": {"clients": [{"id": str(uuid.uuid4())}]}}],
                       "outbounds": [{"protocol": "freedom"}]}, [port])
        self.addCleanup(v2ray.stop)
        app = yield self.connect(port, answer_timeout=8.0)
        yield app.lost
        self.assertIn("before the response header", app.reason.getErrorMessage())
        [line] = self.warnings()
        self.assertIn("server closed the connection after", line)
        self.assertIn(NO_ANSWER_HINT, line)
        yield wait_until(lambda: "invalid user" in v2ray.output(),
                         lambda: v2ray.output(), 10)

    @defer.inlineCallbacks
    def test_forged_response(self) -> Any:
        """A server whose response does not authenticate (not the one holding the id's
        keys): one warning saying so."""
        class Liar(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(bytes(range(64)))

        listening = reactor.listenTCP(0, Factory.forProtocol(Liar), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        app = yield self.connect(listening.getHost().port)
        yield app.lost
        [line] = self.warnings()
        self.assertIn("the response failed authentication", line)

    @defer.inlineCallbacks
    def test_slow_destination_still_connects(self) -> Any:
        """A server that answers after the deadline (a slow destination) keeps the
        connection: the data arrives, and a line says it was not a refusal."""
        user = str(uuid.uuid4())
        target_port = free_port()

        class Late(Protocol):
            def dataReceived(self, data: bytes) -> None:
                reactor.callLater(1.0, self.transport.write, b"late answer")

        target = reactor.listenTCP(target_port, Factory.forProtocol(Late),
                                   interface="127.0.0.1")
        self.addCleanup(target.stopListening)
        port = free_port()
        yield start_service({
            "inbounds": [{"protocol": "vmess", "listen": "127.0.0.1", "port": port,
                          "settings": {"clients": [{"id": user}]}}],
            "outbounds": [{"protocol": "freedom",
                           "settings": {"redirect": f"127.0.0.1:{target_port}"}}]}, self)
        app = yield self.connect(port, answer_timeout=0.3, user=user)
        yield wait_until(lambda: app.received == b"late answer", "no late answer", 10)
        self.assertTrue(any("a slow destination, not a refusal" in x
                            for x in self.capture.lines()), self.capture.lines())
        app.transport.loseConnection()
        yield app.lost

    @defer.inlineCallbacks
    def test_idle_connection_is_not_a_refusal(self) -> Any:
        """An application that has written nothing yet (a browser's preconnect) is not
        waiting for an answer: no warning however long the destination stays silent."""
        from twisted.internet import task

        class Silent(Protocol):
            lost: defer.Deferred[None]

            def connectionLost(self, reason: Any = None) -> None:
                self.lost.callback(None)

        user = str(uuid.uuid4())
        target = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(target.stopListening)
        port = free_port()
        yield start_service({
            "inbounds": [{"protocol": "vmess", "listen": "127.0.0.1", "port": port,
                          "settings": {"clients": [{"id": user}]}}],
            "outbounds": [{"protocol": "freedom", "settings": {
                "redirect": f"127.0.0.1:{target.getHost().port}"}}]}, self)
        endpoint = VMessClientEndpoint(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port),
            Account.from_text(user, security="aes-128-gcm"), Destination.tcp("127.0.0.1", 9),
            reactor=reactor, answer_timeout=0.3)
        app = Silent()
        app.lost = defer.Deferred()
        yield endpoint.connect(Factory.forProtocol(lambda: app))
        yield task.deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(self.warnings(), [])
        app.transport.loseConnection()
        yield app.lost
