"""The TLS layer over memory BIOs (vtwist.transport.tls.memory) and its contexts
(vtwist.transport.tls.tuning): in memory with iosim (flights, records, closing, producers,
failures mid-handshake) and over real sockets (resumption counted on both ends, groups,
cipher suite, names checked by OpenSSL)."""

from __future__ import annotations

import gc
import weakref
from typing import Any

from OpenSSL import SSL
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.certs import shared_ca, shared_server_cert
from vtwist.testing.doubles import HalfCloseRecorder, LogCapture
from vtwist.transport.layer import LayerHandshakeError
from vtwist.transport.tls import layer as tls
from vtwist.transport.tls.context import (
    ClientCreatorCache,
    ResumingClientCreator,
    RotatingServerOptions,
    server_context_factory,
)
from vtwist.transport.tls.settings import TLSCertificate, TLSSettings
from vtwist.transport.tls.tuning import NATIVE

NAME = "tls.example.test"


def server_settings() -> TLSSettings:
    cert = shared_server_cert(NAME, "127.0.0.1")
    return TLSSettings(certificates=[TLSCertificate("encipherment", [cert.cert], cert.key)])


def client_settings(name: str = NAME, **extra: Any) -> TLSSettings:
    return TLSSettings(server_name=name, disable_system_root=True,
                       certificates=[TLSCertificate("verify", [shared_ca().cert])], **extra)


class App(Protocol):
    """Records what arrives (one entry per dataReceived call) and how the connection ended."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.received: list[bytes] = []
        self.reason: Any = None
        self.made = False
        self.greeting = greeting

    def connectionMade(self) -> None:
        self.made = True
        if self.greeting:
            self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason


class CountingTransport(FakeTransport):
    """An iosim transport that counts writes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


class Pair:
    """A client TLSLayer and a server TLSLayer joined in memory."""

    def __init__(self, test: SynchronousTestCase, client: TLSSettings | None = None,
                 server: TLSSettings | None = None, greeting: bytes = b"",
                 after: Pair | None = None, options: Any = None) -> None:
        self.clock = task.Clock()
        server = server or server_settings()
        client = client or client_settings()
        if after is not None:  # the same server and client contexts as ``after``'s
            options, creator = after.options, after.creator
        else:
            options = options or RotatingServerOptions(
                lambda: server_context_factory(server, ["http/1.1"]))
            creator = ClientCreatorCache().get(client, client.server_name or NAME, ["http/1.1"])
        self.options, self.creator = options, creator
        self.server_app, self.client_app = App(), App(greeting)
        self.ready: Deferred = Deferred()
        self.server = tls.TLSLayer(Factory.forProtocol(lambda: self.server_app), options, False,
                                   clock=self.clock)
        self.client = tls.TLSLayer(Factory.forProtocol(lambda: self.client_app), creator, True,
                                   self.ready, client.server_name or NAME, self.clock,
                                   creator if isinstance(creator, ResumingClientCreator)
                                   else None)
        self.server_wire = CountingTransport(self.server, True)
        self.client_wire = CountingTransport(self.client, False)
        self.pump = connect(self.server, self.server_wire, self.client, self.client_wire,
                            greet=False)
        test.addCleanup(self.clock.advance, 60)

    def run(self) -> None:
        self.pump.pump()
        self.pump.flush()


class MemoryTests(SynchronousTestCase):
    def test_flights_and_one_write_each(self) -> None:
        """ClientHello, then the server's flight, then Finished plus the first application
        bytes (written as the client's application connects): the client makes two writes,
        the server one for its flight and, its tickets waiting for its answer, one for that
        answer with the tickets."""
        pair = Pair(self, greeting=b"hello")
        pair.run()
        self.assertTrue(pair.client_app.made and pair.server_app.made)
        self.assertEqual(pair.client_wire.writes, 2)  # ClientHello; Finished with "hello"
        self.assertEqual(pair.server_wire.writes, 1)  # its flight (the tickets wait)
        self.assertEqual(pair.server_app.received, [b"hello"])
        self.assertEqual(pair.client.negotiatedProtocol, b"http/1.1")
        self.assertEqual(pair.client.tls.get_cipher_name(), "TLS_AES_128_GCM_SHA256")
        self.assertEqual(pair.client.tls.get_group_name(), "x25519")
        pair.server_app.transport.write(b"answer")
        pair.run()
        self.assertEqual(pair.server_wire.writes, 2)  # the answer, the tickets with it
        self.assertEqual(pair.client_app.received, [b"answer"])
        self.assertEqual(pair.clock.getDelayedCalls(), [])  # no deadline left on either side
        self.assertIs(pair.client.resumption, None)  # the tickets came: session kept
        pair.client_app.transport.loseConnection()
        pair.run()
        again = Pair(self, greeting=b"hello", after=pair)
        again.run()
        self.assertTrue(again.client.resumed)

    def test_tickets_wait_for_the_answer_or_the_deadline(self) -> None:
        """A server that has not answered keeps its tickets across the client's next records
        (its answer usually follows them), but not past the handshake deadline."""
        pair = Pair(self, greeting=b"hello")
        pair.run()
        self.assertEqual(pair.server_wire.writes, 1)
        pair.client_app.transport.write(b"more")
        pair.run()
        self.assertEqual(pair.server_app.received, [b"hello", b"more"])
        self.assertEqual(pair.server_wire.writes, 1)
        pair.clock.advance(tls.HANDSHAKE_TIMEOUT)
        pair.run()
        self.assertEqual(pair.server_wire.writes, 2)  # the tickets, alone
        self.assertEqual(pair.client_app.received, [])
        self.assertIs(pair.client.resumption, None)  # the client read them
        self.assertFalse(pair.server_wire.disconnecting)  # (the deadline closed nothing)
        again = Pair(self, greeting=b"hello", after=pair)
        again.run()
        self.assertTrue(again.client.resumed)
        pair.server_app.transport.write(b"late")  # and the answer, later, is no different
        pair.run()
        self.assertEqual(pair.client_app.received, [b"late"])

    def test_tickets_go_with_the_close_notify(self) -> None:
        """A server that closes without answering: the tickets and its close_notify in one
        write."""
        pair = Pair(self, greeting=b"hello")
        pair.run()
        pair.server_app.transport.loseConnection()
        pair.run()
        self.assertEqual(pair.server_wire.writes, 2)
        self.assertIsInstance(pair.client_app.reason.value, ConnectionDone)
        again = Pair(self, greeting=b"hello", after=pair)
        again.run()
        self.assertTrue(again.client.resumed)

    def test_addresses_asked_below_once(self) -> None:
        """getPeer and getHost are asked of the TCP transport once each (a getsockname per
        call there), however often the layers above ask."""
        pair = Pair(self, greeting=b"hello")
        asked: list[str] = []
        for name in ("getPeer", "getHost"):
            lower = getattr(pair.client_wire, name)
            setattr(pair.client_wire, name,
                    lambda lower=lower, name=name: asked.append(name) or lower())
        pair.run()
        for _ in range(3):
            self.assertEqual(pair.client_app.transport.getPeer(), pair.client_wire.getPeer())
            self.assertEqual(pair.client_app.transport.getHost(), pair.client_wire.getHost())
        self.assertEqual(asked.count("getPeer") - 3, 1)  # (three were the test's own)
        self.assertEqual(asked.count("getHost") - 3, 1)

    def test_tls12_session_kept_at_the_handshake(self) -> None:
        """Against a TLS 1.2 server the session (its ticket came in the handshake) is kept
        when the handshake ends: the next connection resumes though no record followed."""
        def tls12() -> Any:
            options = server_context_factory(server_settings(), ["http/1.1"])
            options.getContext().set_max_proto_version(SSL.TLS1_2_VERSION)
            return options

        pair = Pair(self, options=RotatingServerOptions(tls12))
        pair.run()
        self.assertEqual(pair.client.tls.get_protocol_version_name(), "TLSv1.2")
        self.assertFalse(pair.client.resumed)
        pair.client_app.transport.loseConnection()
        pair.run()
        again = Pair(self, after=pair)
        again.run()
        self.assertTrue(again.client.resumed)

    def test_records_in_one_read_reach_the_app_in_one_call(self) -> None:
        pair = Pair(self)
        pair.run()
        pair.client_app.transport.write(b"a" * 40000)  # three records
        pair.client_app.transport.writeSequence([b"b", b"c"])
        pair.run()
        self.assertEqual(len(pair.server_app.received), 1)
        self.assertEqual(pair.server_app.received[0], b"a" * 40000 + b"bc")

    def test_large_write_arrives_whole(self) -> None:
        pair = Pair(self)
        pair.run()
        data = bytes(range(256)) * 1024  # 256 KiB: partial SSL_writes, a BIO read past 64 KiB
        pair.server_app.transport.write(data)
        pair.run()
        self.assertEqual(b"".join(pair.client_app.received), data)

    def test_close_notify_then_close(self) -> None:
        """A side that closes sends close_notify and closes; the peer's application sees a
        clean close, its own connectionLost too."""
        pair = Pair(self)
        pair.run()
        handle = pair.client.getHandle()
        pair.client_app.transport.write(b"x")
        pair.client_app.transport.loseConnection()
        pair.client_app.transport.write(b"dropped")
        pair.run()
        self.assertEqual(pair.server_app.received, [b"x"])
        self.assertIsInstance(pair.server_app.reason.value, ConnectionDone)
        self.assertIsInstance(pair.client_app.reason.value, ConnectionDone)
        self.assertTrue(handle.get_shutdown() & SSL.SENT_SHUTDOWN)
        # the OpenSSL connection is let go at once (it does not refer back to its layer)
        self.assertIsNone(pair.client.getHandle())
        self.assertIsNone(handle.get_app_data())
        self.assertFalse(pair.client.resumed)

    def test_tls13_half_close_each_way(self) -> None:
        """TLS 1.3: a close_notify ends one direction; the other goes on, and the connection
        closes once both sides are done (each side's close, either order)."""
        for closer in ("client", "server"):
            pair = Pair(self)
            pair.server_app, pair.client_app = HalfCloseRecorder(), HalfCloseRecorder()
            pair.run()
            ended, other = ((pair.client_app, pair.server_app) if closer == "client"
                            else (pair.server_app, pair.client_app))
            ended.transport.write(b"request")
            ended.transport.loseWriteConnection()
            ended.transport.write(b"dropped: written after the half-close")
            pair.run()
            self.assertTrue(other.readLost)
            self.assertEqual(other.data, b"request")
            self.assertIsNone(other.lost)  # still open: its direction goes on
            self.assertIsNone(ended.lost)
            other.transport.write(b"answer after the half-close")
            pair.run()
            self.assertEqual(ended.data, b"answer after the half-close")
            other.transport.loseConnection()
            pair.run()
            for app in (ended, other):
                self.assertIsInstance(app.lost.value, ConnectionDone)

    def test_close_notify_closes_an_app_without_half_close(self) -> None:
        """A peer's close_notify still closes a connection whose application cannot take a
        half-close (the answer goes, then the close)."""
        pair = Pair(self)
        pair.client_app = HalfCloseRecorder()
        pair.run()
        pair.client_app.transport.loseWriteConnection()
        pair.run()
        self.assertIsInstance(pair.server_app.reason.value, ConnectionDone)
        self.assertIsInstance(pair.client_app.lost.value, ConnectionDone)

    def test_tls12_sends_no_close_notify_for_a_half_close(self) -> None:
        """Under TLS 1.2 a close_notify asks the peer to close: a half-close sends nothing."""
        def tls12() -> Any:
            options = server_context_factory(server_settings(), ["http/1.1"])
            options.getContext().set_max_proto_version(SSL.TLS1_2_VERSION)
            return options

        pair = Pair(self, options=RotatingServerOptions(tls12))
        pair.server_app, pair.client_app = HalfCloseRecorder(), HalfCloseRecorder()
        pair.run()
        writes = pair.client_wire.writes
        pair.client_app.transport.loseWriteConnection()
        pair.run()
        self.assertEqual(pair.client_wire.writes, writes)
        self.assertFalse(pair.server_app.readLost)
        pair.client_app.transport.write(b"still open")
        pair.run()
        self.assertEqual(pair.server_app.data, b"still open")

    def test_tcp_close_without_close_notify_is_connection_lost(self) -> None:
        pair = Pair(self)
        pair.run()
        pair.server_wire.loseConnection()  # TCP only: no close_notify
        pair.run()
        self.assertIsInstance(pair.client_app.reason.value, ConnectionLost)

    def test_close_waits_for_the_producer(self) -> None:
        """As over Twisted's TLS: loseConnection with a producer registered sends close_notify
        once the producer is unregistered; what it writes meanwhile still goes out."""
        pair = Pair(self)
        pair.run()
        transport = pair.client_app.transport

        class Producer:
            def pauseProducing(self) -> None: ...
            def resumeProducing(self) -> None: ...
            def stopProducing(self) -> None: ...

        transport.registerProducer(Producer(), True)
        transport.loseConnection()
        transport.write(b"late")
        pair.run()
        self.assertEqual(pair.server_app.received, [b"late"])
        self.assertIsNone(pair.server_app.reason)
        transport.unregisterProducer()
        pair.run()
        self.assertIsInstance(pair.server_app.reason.value, ConnectionDone)

    def test_garbage_mid_handshake_fails_cleanly(self) -> None:
        """The server's flight replaced by garbage: the client fails its connect with one
        reason, sends its alert and closes; the server fails on that alert. One line each,
        no application connected."""
        logs = LogCapture("vtwist.transport.tls")
        self.addCleanup(logs.stop)
        pair = Pair(self)
        failures: list[Any] = []
        pair.ready.addErrback(failures.append)
        pair.client.dataReceived(b"\x16\x03\x03\x00\x05garbage-after-a-hello")
        pair.run()
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0].value, LayerHandshakeError)
        self.assertFalse(pair.client_app.made)
        self.assertTrue(pair.client_wire.disconnecting or pair.client_wire.disconnected)
        self.assertFalse(pair.server_app.made)
        self.assertEqual(len(logs.lines()), 2, logs.lines())
        self.assertIn("unexpected message", logs.lines()[0])

    def test_handshake_timeout_aborts(self) -> None:
        pair = Pair(self)
        failures: list[Any] = []
        pair.ready.addErrback(failures.append)
        pair.clock.advance(tls.HANDSHAKE_TIMEOUT + 1)  # nothing pumped: no handshake
        self.assertEqual(len(failures), 1)
        self.assertIn("no handshake within", str(failures[0].value))

    def test_untrusted_and_wrong_name_are_told_apart(self) -> None:
        self.assertTrue(NATIVE)
        for settings, text in ((client_settings("other.test"),
                                "does not match the name 'other.test'"),
                               (TLSSettings(server_name=NAME, disable_system_root=True),
                                "untrusted certificate chain")):
            pair = Pair(self, client=settings)
            failures: list[Any] = []
            pair.ready.addErrback(failures.append)
            pair.run()
            self.assertEqual(len(failures), 1)
            self.assertIn(text, str(failures[0].value))
            self.assertFalse(pair.server_app.made)


class NameTests(SynchronousTestCase):
    """The name a verifying client checks, now in OpenSSL: SAN DNS names with a wildcard for
    exactly one whole label, IP addresses against iPAddress entries."""

    def connects(self, cert_names: tuple[str, ...], server_name: str) -> bool:
        cert = shared_server_cert(*cert_names)
        server = TLSSettings(certificates=[TLSCertificate("encipherment", [cert.cert],
                                                          cert.key)])
        pair = Pair(self, client=client_settings(server_name), server=server)
        failures: list[Any] = []
        pair.ready.addErrback(failures.append)
        pair.run()
        if failures:
            self.assertIn(f"does not match the name {server_name!r}", str(failures[0].value))
        return not failures and pair.client_app.made

    def test_dns_names_and_wildcards(self) -> None:
        self.assertTrue(self.connects((NAME,), NAME))
        self.assertTrue(self.connects((NAME,), NAME.upper()))
        self.assertTrue(self.connects(("*.wild.test",), "a.wild.test"))
        self.assertFalse(self.connects(("*.wild.test",), "b.a.wild.test"))
        self.assertFalse(self.connects(("*.wild.test",), "wild.test"))
        self.assertFalse(self.connects((NAME,), "x" + NAME))

    def test_ip_addresses(self) -> None:
        self.assertTrue(self.connects((NAME, "127.0.0.1"), "127.0.0.1"))
        self.assertFalse(self.connects((NAME, "127.0.0.1"), "127.0.0.2"))
        self.assertTrue(self.connects(("::1",), "::1"))
        self.assertFalse(self.connects((NAME,), "127.0.0.1"))


class Resumed(Protocol):
    """Server side: records whether the handshake resumed, answers one byte."""

    seen: list[bool]

    def dataReceived(self, data: bytes) -> None:
        self.seen.append(self.transport.resumed)
        self.transport.write(data)


class Ping(Protocol):
    def __init__(self) -> None:
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.resumed = self.transport.resumed
        self.transport.write(b"x")

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(self.resumed)


class Drop(Ping):
    """A Ping that drops the connection (no close_notify) when the answer comes."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.abortConnection()


class SocketTests(TestCase):
    timeout = 30

    async def test_resumption_counted_on_both_ends(self) -> None:
        """Twelve connections over real sockets, four at a time after the first: every one
        after the first full handshake resumes, on the client and on the server."""
        seen: list[bool] = []
        factory = Factory.forProtocol(Resumed)
        factory.protocol.seen = seen  # type: ignore[attr-defined]
        endpoint = tls.wrap_server_endpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                            server_settings(), ["http/1.1"], clock=reactor)
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        settings = client_settings()

        async def one() -> bool:
            client = tls.wrap_client_endpoint(
                reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
                "127.0.0.1", settings, ["http/1.1"])
            ping = Ping()
            await client.connect(Factory.forProtocol(lambda: ping))
            return await ping.done

        from twisted.internet.defer import gatherResults

        flags = [await one()]
        for _ in range(3):
            flags += await gatherResults([Deferred.fromCoroutine(one()) for _ in range(4)])
        self.assertEqual(flags, [False] + [True] * 12)
        self.assertEqual(sorted(seen), [False] + [True] * 12)

        # a connection dropped without a close_notify leaves the session resumable
        client = tls.wrap_client_endpoint(
            reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            "127.0.0.1", settings, ["http/1.1"])
        drop = Drop()
        await client.connect(Factory.forProtocol(lambda d=drop: d))
        self.assertTrue(await drop.done)
        ref = weakref.ref(drop.transport.tls)
        del drop
        await task.deferLater(reactor, 0, lambda: None)  # connectionLost has returned
        gc.collect()  # OpenSSL judges the session when the connection is freed
        self.assertIsNone(ref())
        self.assertEqual(await one(), True)
