"""TCP connections that send at once (EagerServer/EagerClient), the lean client endpoint and
the lean poll, over real loopback sockets."""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionRefusedError,
    NoProtocol,
    TimeoutError,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.netutil import free_port, silent_port
from vtwist.transport.internals import (
    WRITE_HIGH_WATER,
    DialTimeoutError,
    EagerClient,
    EagerServer,
    LeanTCPClientEndpoint,
    lean_poll,
    raise_write_high_water,
)
from vtwist.transport.tcp.endpoints import tcp_client_endpoint
from vtwist.transport.tcp.listen import TCPServerEndpoint


@implementer(IHalfCloseableProtocol)
class Sink(Protocol):
    """Hashes what arrives; fires ``done`` with (sha256, length) at the peer's half-close."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.length = 0
        self.done: defer.Deferred[tuple[str, int]] = defer.Deferred()
        self.made = False

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.length += len(data)

    def readConnectionLost(self) -> None:
        self.done.callback((self.hash.hexdigest(), self.length))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(reason)


class EagerWriteTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def listen(self, protocol: Protocol) -> Any:
        port = yield TCPServerEndpoint(reactor, 0, "127.0.0.1").listen(
            Factory.forProtocol(lambda: protocol))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def test_close_reasons_list_their_classes_from_a_cache(self) -> Any:
        """A connection lost with a Failure that has not listed its exception's classes yet
        (what ``check`` and ``trap`` read) gets them from one list per exception class,
        not a new ``reflect.qual`` walk per connection; the names are Twisted's own."""
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        from vtwist.transport import internals

        self.patch(internals, "_PARENTS", {})
        reasons = []
        for _ in range(2):
            server = Sink()
            port = yield self.listen(server)
            client = Sink()
            yield LeanTCPClientEndpoint(reactor, "127.0.0.1", port).connect(
                Factory.forProtocol(lambda client=client: client))
            got: list[Any] = []
            client.connectionLost = got.append  # type: ignore[method-assign]
            reason = Failure(ConnectionDone())  # fresh: its classes not listed yet
            client.transport.connectionLost(reason)  # as the reactor calls it
            self.assertEqual(got, [reason])
            reasons.append(reason)
        first, second = reasons
        self.assertIs(first.parents, second.parents)
        self.assertIs(internals._PARENTS[ConnectionDone], first.parents)
        self.assertEqual(first.parents, Failure(ConnectionDone()).parents)
        self.assertTrue(second.check(ConnectionDone))

    @defer.inlineCallbacks
    def test_small_write_leaves_at_once(self) -> Any:
        """A write with nothing queued is on the wire before the reactor turns: nothing is
        buffered and the socket is not registered for writing; both ends are eager."""
        server = Sink()
        port = yield self.listen(server)
        client = yield tcp_client_endpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(Protocol))
        self.assertIsInstance(client.transport, EagerClient)
        client.transport.write(b"hello")
        client.transport.writeSequence([b" ", b"world"])
        self.assertEqual(client.transport.dataBuffer, b"")
        self.assertEqual(client.transport._tempDataLen, 0)
        self.assertNotIn(client.transport, reactor.getWriters())
        client.transport.loseWriteConnection()
        digest, length = yield server.done
        self.assertIsInstance(server.transport, EagerServer)
        self.assertEqual((digest, length),
                         (hashlib.sha256(b"hello world").hexdigest(), 11))

    @defer.inlineCallbacks
    def test_large_writes_keep_order(self) -> Any:
        """Writes larger than the socket takes are queued from where the send stopped;
        later writes and sequences queue behind them; every byte arrives once, in order."""
        server = Sink()
        port = yield self.listen(server)
        client = yield tcp_client_endpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(Protocol))
        client.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        expected = hashlib.sha256()
        total = 0
        for i in range(40):
            block = os.urandom(50_000 + i)
            if i % 3:
                client.transport.write(block)
            else:
                client.transport.writeSequence([block[:7], block[7:]])
            expected.update(block)
            total += len(block)
        self.assertGreater(len(client.transport.dataBuffer) + client.transport._tempDataLen, 0)
        client.transport.loseWriteConnection()
        digest, length = yield server.done
        self.assertEqual((digest, length), (expected.hexdigest(), total))

    @defer.inlineCallbacks
    def test_half_close_reaches_the_protocol(self) -> Any:
        """The lean endpoint hands the transport the application's own protocol: a
        half-closeable protocol gets readConnectionLost and can still write back."""
        received: defer.Deferred[bytes] = defer.Deferred()

        class Answer(Protocol):
            def dataReceived(self, data: bytes) -> None:
                received.callback(data)

        port = yield self.listen(Answer())
        sink = Sink()
        client = yield LeanTCPClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: sink))
        self.assertIs(client, sink)
        self.assertTrue(sink.made)
        client.transport.write(b"ping")
        yield received
        # the server half-closes: our protocol sees readConnectionLost, writes still work
        server_transport = [t for t in reactor.getReaders()
                            if isinstance(t, EagerServer) and t.getHost().port == port]
        self.assertEqual(len(server_transport), 1)
        server_transport[0].write(b"bye")
        server_transport[0].loseWriteConnection()
        digest, length = yield sink.done
        self.assertEqual((digest, length), (hashlib.sha256(b"bye").hexdigest(), 3))


class HighWaterTests(SynchronousTestCase):
    def test_eager_connections_buffer_to_the_relay_mark(self) -> None:
        """vtwist's TCP connections pause their producer only past WRITE_HIGH_WATER (a relay
        would otherwise pause and resume on nearly every 64 KiB read), with nothing set per
        connection."""
        for cls in (EagerServer, EagerClient):
            t = cls.__new__(cls)
            t.dataBuffer, t._tempDataLen = b"", 200_000
            self.assertFalse(t._isSendBufferFull())
            t._tempDataLen = WRITE_HIGH_WATER + 1
            self.assertTrue(t._isSendBufferFull())
            raise_write_high_water(t)
            self.assertNotIn("_isSendBufferFull", vars(t))


class LeanEndpointFailureTests(TestCase):
    timeout = 30

    def test_refused(self) -> Any:
        """Nothing listening: the Deferred fails with ConnectionRefusedError."""
        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", free_port()).connect(
            Factory.forProtocol(Protocol))
        return self.assertFailure(d, ConnectionRefusedError)

    def listening_port(self) -> int:
        """A loopback port something listens on (a bare socket: nothing is accepted)."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        return listener.getsockname()[1]

    def test_no_protocol(self) -> Any:
        """A factory that builds nothing: NoProtocol, and the connection is dropped."""

        class Nothing(Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", self.listening_port()).connect(
            Nothing())
        return self.assertFailure(d, NoProtocol)

    def test_cancel(self) -> Any:
        """Cancelling before the connection completes: ConnectingCancelledError."""
        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", self.listening_port()).connect(
            Factory.forProtocol(Protocol))  # the connect itself starts on the next turn
        d.cancel()
        return self.assertFailure(d, ConnectingCancelledError)

    def test_failing_connection_made(self) -> Any:
        """A protocol whose connectionMade raises: the Deferred fails rather than hanging."""

        class Broken(Protocol):
            def connectionMade(self) -> None:
                raise ValueError("broken")

        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", self.listening_port()).connect(
            Factory.forProtocol(Broken))

        def check(_: Any) -> None:
            self.flushLoggedErrors(ValueError)

        return self.assertFailure(d, Exception).addCallback(check)


class LeanEndpointDeadlineTests(TestCase):
    """``connectWithin``: a caller's deadline kept by the dial's own connect timer."""

    timeout = 30

    def test_deadline_sooner_than_the_endpoints(self) -> Any:
        """The deadline applies and says how long it was."""
        started = reactor.seconds()
        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", silent_port(self), timeout=30
                                  ).connectWithin(Factory.forProtocol(Protocol), 0.3)

        def check(e: DialTimeoutError) -> None:
            self.assertEqual(str(e), "no connection within 0.3s")
            self.assertLess(reactor.seconds() - started, 10)

        return self.assertFailure(d, DialTimeoutError).addCallback(check)

    def test_endpoint_timeout_sooner(self) -> Any:
        """The endpoint's own timeout, when sooner, fails as Twisted's does."""
        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", silent_port(self), timeout=0.3
                                  ).connectWithin(Factory.forProtocol(Protocol), 20)

        def check(e: Exception) -> None:
            self.assertNotIsInstance(e, DialTimeoutError)

        return self.assertFailure(d, TimeoutError).addCallback(check)


class LeanPollTests(SynchronousTestCase):
    def test_handlers_called_and_errors_logged(self) -> None:
        """A lean-polled epoll reactor runs readiness handlers; one that raises is logged
        and the next event is still handled."""
        r = EPollReactor()
        self.addCleanup(r.disconnectAll)
        self.assertTrue(lean_poll(r))
        calls: list[str] = []

        class Reader:
            def __init__(self, name: str, fail: bool) -> None:
                self.rfd, self.wfd = os.pipe()
                os.write(self.wfd, b"x")
                self.name, self.fail = name, fail

            def fileno(self) -> int:
                return self.rfd

            def doRead(self) -> None:
                os.read(self.rfd, 1)
                calls.append(self.name)
                if self.fail:
                    raise RuntimeError("handler failed")

            def logPrefix(self) -> str:
                return self.name

            def connectionLost(self, reason: Any) -> None:
                calls.append(f"{self.name} lost")

        readers = [Reader("a", True), Reader("b", False)]
        for reader in readers:
            r.addReader(reader)
        r.doIteration(0)
        for reader in readers:
            r.removeReader(reader)
            os.close(reader.rfd)
            os.close(reader.wfd)
        self.assertEqual(sorted(c for c in calls if " " not in c), ["a", "b"])
        self.assertIn("a lost", calls)  # Twisted's handling: a raising handler disconnects
        self.flushLoggedErrors(RuntimeError)

    def test_other_reactors_untouched(self) -> None:
        """Only the epoll reactor itself is changed."""
        from twisted.internet.selectreactor import SelectReactor

        self.assertFalse(lean_poll(SelectReactor()))


class BoundedDrainTests(TestCase):
    """A closing connection whose queued bytes stop draining is aborted after DRAIN_LIMIT;
    one that drains (even slowly) closes as usual, and no timer outlives a connection."""

    timeout = 30

    def setUp(self) -> None:
        import vtwist.transport.internals as internals

        self.patch(internals, "DRAIN_LIMIT", 0.3)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.addCleanup(self.listener.close)

    @defer.inlineCallbacks
    def _connect_and_fill(self) -> Any:
        client = yield LeanTCPClientEndpoint(reactor, "127.0.0.1",
                                             self.listener.getsockname()[1]).connect(
            Factory.forProtocol(Protocol))
        peer, _ = self.listener.accept()
        self.addCleanup(peer.close)
        client.transport.write(b"x" * (16 * 1024 * 1024))
        self.assertGreater(client.transport._queuedBytes(), 0)
        return client, peer

    @defer.inlineCallbacks
    def test_a_peer_that_never_reads_gets_the_connection_aborted(self) -> Any:
        from twisted.internet.task import deferLater

        client, _peer = yield self._connect_and_fill()
        client.transport.loseConnection()
        self.assertTrue(client.transport.connected)  # waiting for the drain
        yield deferLater(reactor, 0.15, lambda: None)
        self.assertTrue(client.transport.connected)
        yield deferLater(reactor, 0.5, lambda: None)
        self.assertFalse(client.transport.connected)

    @defer.inlineCallbacks
    def test_a_slow_reader_keeps_the_connection_until_it_drains(self) -> Any:
        """A peer reading a little every interval is never aborted: everything arrives."""
        from twisted.internet.task import deferLater

        client, peer = yield self._connect_and_fill()
        peer.setblocking(False)
        client.transport.loseConnection()
        received, chunk = 0, b""
        for _ in range(400):  # bounded: 16 MiB at >= 1 MiB per 50 ms step
            yield deferLater(reactor, 0.05, lambda: None)
            try:
                while chunk := peer.recv(1 << 20):
                    received += len(chunk)
                    if received % (1 << 20) < len(chunk):
                        break  # about 1 MiB per step: slower than one interval's drain
            except BlockingIOError:
                pass
            if not chunk and received:
                break
        self.assertEqual(received, 16 * 1024 * 1024)
        self.assertFalse(client.transport.connected)
        self.assertIsNone(client.transport._drainCheck)
