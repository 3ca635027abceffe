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
    ConnectionAborted,
    ConnectionDone,
    ConnectionRefusedError,
    NoProtocol,
    TimeoutError,
)
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from tests.netutil import free_port, silent_port
from vtwist.transport.internals import (
    WRITE_HIGH_WATER,
    DialTimeoutError,
    EagerClient,
    EagerServer,
    LeanTCPClientEndpoint,
    at_turn_end,
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
    def test_accepted_peer_is_the_address_the_factory_got(self) -> Any:
        """An accepted connection's ``getPeer`` is the address built at accept time (given
        to ``buildProtocol``), the client's own, and the same object on every call."""
        built: list[Any] = []

        class Recording(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                built.append(addr)
                return Protocol()

        port = yield TCPServerEndpoint(reactor, 0, "127.0.0.1").listen(Recording())
        self.addCleanup(port.stopListening)
        client = yield LeanTCPClientEndpoint(reactor, "127.0.0.1", port.getHost().port
                                             ).connect(Factory.forProtocol(Protocol))
        server_transport = None
        for _ in range(500):
            server_transport = next((t for t in reactor.getReaders()
                                     if built and isinstance(t, EagerServer)
                                     and t.getPeer() is built[0]), None)
            if server_transport is not None:
                break
            yield deferLater(reactor, 0.01)
        self.assertIsNotNone(server_transport)
        local = client.transport.getHost()
        self.assertEqual((built[0].host, built[0].port), (local.host, local.port))
        self.assertIs(server_transport.getPeer(), server_transport.getPeer())
        client.transport.loseConnection()
        for _ in range(500):
            if server_transport.disconnected:
                break
            yield deferLater(reactor, 0.01)

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

    def watched(self) -> set[Any]:
        """The dialled connections the reactor watches (its bookkeeping, read and write)."""
        watched = (reactor._selectables.get(fd) for fd in reactor._reads | reactor._writes)
        return {t for t in watched if isinstance(t, EagerClient)}

    def test_refused(self) -> Any:
        """Nothing listening: the Deferred fails with ConnectionRefusedError, and the
        reactor watches nothing of the attempt (it watched it for reading and writing at
        once while connecting)."""
        before = self.watched()
        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", free_port()).connect(
            Factory.forProtocol(Protocol))
        d = self.assertFailure(d, ConnectionRefusedError)
        d.addCallback(lambda _: self.assertEqual(self.watched(), before))
        return d

    def test_connected_is_watched_for_reading_only(self) -> Any:
        """Once connected the reactor watches the connection for reading, not writing."""
        d = LeanTCPClientEndpoint(reactor, "127.0.0.1", self.listening_port()).connect(
            Factory.forProtocol(Protocol))

        def check(protocol: Protocol) -> None:
            fd = protocol.transport.fileno()
            self.assertIn(fd, reactor._reads)
            self.assertNotIn(fd, reactor._writes)
            self.assertIs(reactor._selectables[fd], protocol.transport)
            protocol.transport.abortConnection()

        return d.addCallback(check)

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


class _Closer(Protocol):
    """Writes ``greeting`` once connected, then closes (or half-closes) as told."""

    def __init__(self, greeting: bytes, how: str) -> None:
        self.greeting, self.how = greeting, how
        self.received = b""
        self.lost: list[Any] = []
        self.write_lost = 0

    def connectionMade(self) -> None:
        self.transport.write(self.greeting)
        if self.how == "close":
            self.transport.loseConnection()
        elif self.how == "half":
            self.transport.loseWriteConnection()
        elif self.how == "close-abort":
            self.transport.loseConnection()
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        self.write_lost += 1

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


implementer(IHalfCloseableProtocol)(_Closer)


class PromptCloseTests(SynchronousTestCase):
    """On a lean-polled reactor a connection with nothing queued closes or half-closes at the
    end of the reactor turn, never registered for writing; with bytes queued it waits for
    writability as Twisted does. Real sockets, a reactor of the test's own."""

    def setUp(self) -> None:
        self.reactor = r = EPollReactor()
        self.assertTrue(lean_poll(r))
        self.writers: list[Any] = []
        add_writer = r.addWriter

        def recording_add_writer(selectable: Any) -> None:
            self.writers.append(selectable)
            add_writer(selectable)

        r.addWriter = recording_add_writer  # type: ignore[method-assign]
        self.addCleanup(r.disconnectAll)

    def serve(self, protocol: _Closer) -> socket.socket:
        """A listening port on the test's reactor whose one connection gets ``protocol``;
        returns a blocking client socket connected to it, once accepted."""
        port = TCPServerEndpoint(self.reactor, 0, "127.0.0.1").listen(
            Factory.forProtocol(lambda: protocol))
        listening = self.successResultOf(port)
        self.addCleanup(listening.stopListening)
        client = socket.create_connection(("127.0.0.1", listening.getHost().port), timeout=10)
        self.addCleanup(client.close)
        self.spin(lambda: protocol.transport is not None)
        return client

    def spin(self, done: Any, turns: int = 200) -> None:
        for _ in range(turns):
            if done():
                return
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0.02)
        self.fail("the reactor never got there")

    def read_all(self, client: socket.socket) -> bytes:
        chunks = []
        while True:
            data = client.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def test_close_with_nothing_queued(self) -> None:
        protocol = _Closer(b"hello", "close")
        client = self.serve(protocol)
        self.spin(lambda: protocol.lost)
        self.assertEqual(self.read_all(client), b"hello")
        self.assertEqual(len(protocol.lost), 1)
        protocol.lost[0].trap(ConnectionDone)
        self.assertEqual(self.writers, [])

    def test_half_close_with_nothing_queued_keeps_reading(self) -> None:
        protocol = _Closer(b"hello", "half")
        client = self.serve(protocol)
        self.spin(lambda: protocol.write_lost)
        self.assertEqual(self.read_all(client), b"hello")  # EOF after the greeting
        client.sendall(b"after our half-close")
        client.shutdown(socket.SHUT_WR)
        self.spin(lambda: protocol.lost)
        self.assertEqual(protocol.received, b"after our half-close")
        self.assertEqual(protocol.write_lost, 1)
        self.assertEqual(self.writers, [])

    def test_half_closed_both_ways_closes_without_shutdown(self) -> None:
        """After our half-close and the peer's, the socket is closed without Twisted's
        ``shutdown(2)`` (our FIN is out; the call would only fail with ENOTCONN)."""
        protocol = _Closer(b"hello", "half")
        client = self.serve(protocol)
        calls: list[str] = []

        class Recording:
            def __init__(self, sock: socket.socket) -> None:
                self.sock = sock

            def __getattr__(self, name: str) -> Any:
                if name in ("shutdown", "close"):
                    calls.append(name)
                return getattr(self.sock, name)

        self.spin(lambda: protocol.write_lost)
        protocol.transport.socket = Recording(protocol.transport.socket)
        self.assertEqual(self.read_all(client), b"hello")  # our FIN came
        client.shutdown(socket.SHUT_WR)  # the peer's EOF: our protocol then closes
        self.spin(lambda: protocol.lost)
        self.assertEqual(calls, ["close"])

    def test_close_with_bytes_queued_waits_for_them(self) -> None:
        """A close behind queued bytes goes Twisted's way: registered for writing, then
        closed once the client has read them all."""
        payload = os.urandom(8 * 1024 * 1024)  # more than the socket buffers take
        protocol = _Closer(payload, "close")
        client = self.serve(protocol)
        self.assertIn(protocol.transport, self.writers)
        got = bytearray()
        for _ in range(10_000):
            if protocol.lost:
                break
            self.reactor.doIteration(0)
            client.settimeout(0.01)
            try:
                data = client.recv(1 << 20)
            except TimeoutError:
                continue
            got += data
        client.settimeout(10)
        got += self.read_all(client)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(payload).digest())
        self.assertEqual(len(protocol.lost), 1)

    def test_close_then_abort_in_one_turn_is_lost_once(self) -> None:
        protocol = _Closer(b"hello", "close-abort")
        client = self.serve(protocol)
        self.spin(lambda: protocol.lost)
        for _ in range(5):  # whatever else was pending runs, and adds nothing
            self.reactor.runUntilCurrent()
            self.reactor.doIteration(0)
        self.assertEqual(len(protocol.lost), 1)
        protocol.lost[0].trap(ConnectionAborted)
        client.settimeout(10)
        try:
            self.read_all(client)
        except ConnectionResetError:
            pass


class SuiteReactorTests(SynchronousTestCase):
    def test_the_suite_runs_on_the_lean_poll(self) -> None:
        """tests/__init__.py puts the suite on the poll loop vtwist's processes run on, so
        every test exercises prompt closes (in every trial worker)."""
        self.assertIsInstance(getattr(reactor, "_promptCloses", None), list)


class TurnEndTests(SynchronousTestCase):
    def test_calls_run_once_at_the_end_of_the_turn(self) -> None:
        """A running lean-polled reactor runs what ``at_turn_end`` was given after the
        turn's handlers, once, and polls without waiting while something is due."""
        r = EPollReactor()
        self.addCleanup(r.disconnectAll)
        lean_poll(r)
        r.running = True  # as while run() runs
        calls: list[str] = []
        self.assertTrue(at_turn_end(r, lambda: calls.append("a")))
        self.assertTrue(at_turn_end(r, lambda: calls.append("b")))
        self.assertEqual(calls, [])
        r.doIteration(30)  # would wait 30 s with nothing due
        self.assertEqual(calls, ["a", "b"])
        r.doIteration(0)
        self.assertEqual(calls, ["a", "b"])

    def test_declined_when_not_running_or_not_lean(self) -> None:
        """Elsewhere the caller is told to do it now."""
        r = EPollReactor()
        self.addCleanup(r.disconnectAll)
        self.assertFalse(at_turn_end(r, lambda: None))  # not lean-polled
        lean_poll(r)
        self.assertFalse(at_turn_end(r, lambda: None))  # not running
