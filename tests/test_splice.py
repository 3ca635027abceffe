"""The zero-copy relay (:mod:`vtwist.tunnel.splice`) on real sockets, and where it stays off.

The proxy (socks or dokodemo-door inbound, freedom outbound) runs in the test's reactor, so
:data:`vtwist.tunnel.splice.stats` shows whether a relay spliced; clients and targets are
blocking sockets in threads. Every test checks that nothing leaks: no live splicer, no socket
end left with the reactor, no pipe left open in the process.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

from twisted.internet import defer, reactor, task, threads
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.test.proto_helpers import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from vtwist.proxy.socks import codec
from vtwist.service import InboundService
from vtwist.tunnel import splice
from vtwist.tunnel.relay import Relay, RelayProtocol
from vtwist.tunnel.splice import SocketEnd, stats
from vtwist.tunnel.stream import Phase

from .netutil import free_port
from .services import start_service
from .test_socks_e2e import recv_exactly, recv_reply, socks_connect

MB = 1024 * 1024
TIMEOUT = 30


def fd_target(fd: int) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


class PipeWatch:
    """Records every pipe a splicer opens; :meth:`still_open` names those not closed."""

    def __init__(self, test: Any) -> None:
        self.opened: list[tuple[int, str | None]] = []
        original = splice._Pipe.open

        def record(pipe: Any) -> None:
            original(pipe)
            self.opened += [(fd, fd_target(fd)) for fd in (pipe.rfd, pipe.wfd)]

        patcher = mock.patch.object(splice._Pipe, "open", record)
        patcher.start()
        test.addCleanup(patcher.stop)

    def still_open(self) -> list[tuple[int, str | None]]:
        return [(fd, target) for fd, target in self.opened if fd_target(fd) == target]


def socket_ends() -> list[Any]:
    """Splice socket ends still registered with the reactor."""
    return [s for s in reactor.getReaders() + reactor.getWriters() if isinstance(s, SocketEnd)]


def blocks(total: int, seed: bytes) -> Iterator[memoryview]:
    """``total`` bytes in 1 MiB blocks, each numbered (so order matters to the digest)."""
    base = hashlib.sha256(seed).digest() * (MB // 32)
    for i in range(0, total, MB):
        yield memoryview(i.to_bytes(8, "big") + base[8:min(MB, total - i)])


def digest_of(total: int, seed: bytes) -> bytes:
    h = hashlib.sha256()
    for block in blocks(total, seed):
        h.update(block)
    return h.digest()


def send_all(sock: socket.socket, total: int, seed: bytes) -> None:
    for block in blocks(total, seed):
        sock.sendall(block)


def recv_digest(sock: socket.socket, limit: int | None = None) -> tuple[int, bytes]:
    """Read to EOF (or ``limit`` bytes): (count, sha256)."""
    h = hashlib.sha256()
    buf = bytearray(MB)
    view = memoryview(buf)
    count = 0
    while limit is None or count < limit:
        want = MB if limit is None else min(MB, limit - count)
        n = sock.recv_into(view[:want])
        if not n:
            break
        h.update(view[:n])
        count += n
    return count, h.digest()


class Target:
    """A blocking TCP server in a thread; ``handler(sock)`` serves each connection."""

    def __init__(self, test: TestCase, handler: Callable[[socket.socket], Any],
                 rcvbuf: int = 0) -> None:
        self.server = socket.socket()
        if rcvbuf:
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.server.settimeout(TIMEOUT)
        self.port = self.server.getsockname()[1]
        self.results: list[Any] = []
        self.errors: list[BaseException] = []
        self.handler = handler
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        test.addCleanup(self.server.close)

    def _run(self) -> None:
        try:
            conn, _ = self.server.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                self.results.append(self.handler(conn))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    def result(self) -> Any:
        """What the handler returned (call it in a thread: the reactor must keep relaying)."""
        self.thread.join(TIMEOUT)
        if self.errors:
            raise self.errors[0]
        if not self.results:
            raise AssertionError(f"target still serving after {TIMEOUT}s "
                                 f"(alive: {self.thread.is_alive()})")
        return self.results[0]


#: How long a test waits for a new relay to switch to splice (it is offered after 20 ms).
SETTLE = 0.15


def both_ways(sock: socket.socket, total: int, send_seed: bytes,
              settle: float = SETTLE) -> tuple[int, bytes]:
    """After ``settle`` seconds, send ``total`` bytes (then FIN) while reading to EOF;
    returns what was read."""
    time.sleep(settle)
    sender = threading.Thread(target=lambda: (send_all(sock, total, send_seed),
                                              sock.shutdown(socket.SHUT_WR)), daemon=True)
    sender.start()
    got = recv_digest(sock)
    sender.join(TIMEOUT)
    return got


class SpliceTestBase(TestCase):
    timeout = 120
    inbound: dict[str, Any] = {"protocol": "socks", "settings": {"auth": "noauth"}}
    policy: dict[str, Any] = {}

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.pipes = PipeWatch(self)
        self.started = stats.started
        self.port = free_port()
        config: dict[str, Any] = {
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "in", "listen": "127.0.0.1", "port": self.port,
                          **self.inbound}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}]}
        if self.policy:
            config["policy"] = self.policy
        self.service = yield start_service(config, self)

    @defer.inlineCallbacks
    def assertNothingLeft(self) -> Any:
        """Every splicer stopped, no socket end with the reactor, the pipes all closed."""
        for _ in range(100):
            if stats.live == 0 and not socket_ends() and not self.pipes.still_open():
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(stats.live, 0)
        self.assertEqual(socket_ends(), [])
        self.assertEqual(self.pipes.still_open(), [])

    def spliced(self) -> int:
        return stats.started - self.started


class SocksSpliceTests(SpliceTestBase):
    @defer.inlineCallbacks
    def test_200mb_both_ways(self) -> Any:
        """200 MB up and 200 MB down at once, sha256-checked, moved by splice."""
        total = 200 * MB
        moved = stats.bytes
        target = Target(self, lambda s: both_ways(s, total, b"down"))

        def client() -> tuple[int, bytes]:
            with socks_connect(self.port, "127.0.0.1", target.port) as sock:
                sock.settimeout(TIMEOUT)
                return both_ways(sock, total, b"up")

        down = yield threads.deferToThread(client)
        self.assertEqual(down, (total, digest_of(total, b"down")))
        up = yield threads.deferToThread(target.result)
        self.assertEqual(up, (total, digest_of(total, b"up")))
        self.assertEqual(self.spliced(), 1)
        self.assertGreater(stats.bytes - moved, 2 * total - 2 * MB)
        yield self.assertNothingLeft()

    @defer.inlineCallbacks
    def test_half_close_each_way(self) -> Any:
        """The client's FIN reaches the target while the target keeps sending; then the
        target's FIN reaches the client."""
        request = 3 * MB

        def serve(sock: socket.socket) -> tuple[int, bytes]:
            got = recv_digest(sock)  # to the client's FIN
            send_all(sock, 5 * MB, b"answer")  # the downlink still flows
            return got

        target = Target(self, serve)

        def client() -> tuple[int, bytes]:
            with socks_connect(self.port, "127.0.0.1", target.port) as sock:
                sock.settimeout(TIMEOUT)
                time.sleep(SETTLE)  # let the relay switch to splice before any byte
                send_all(sock, request, b"request")
                sock.shutdown(socket.SHUT_WR)
                return recv_digest(sock)

        down = yield threads.deferToThread(client)
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (request, digest_of(request, b"request")))
        self.assertEqual(down, (5 * MB, digest_of(5 * MB, b"answer")))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()

    @defer.inlineCallbacks
    def test_early_data_first(self) -> Any:
        """Bytes the client sends with its CONNECT (held while connecting) and bytes the
        target sends before the relay exists arrive before the spliced ones."""
        early = b"early bytes, held by the tunnel|"
        banner = b"target speaks first|"

        def serve(sock: socket.socket) -> bytes:
            sock.sendall(banner)
            data = recv_exactly(sock, len(early) + 4 * MB)
            send_all(sock, 2 * MB, b"later")
            sock.shutdown(socket.SHUT_WR)
            recv_digest(sock)
            return data

        target = Target(self, serve)

        def client() -> bytes:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
            with sock:
                # greeting, CONNECT and the first bytes in one write, before any reply
                sock.sendall(codec.client_greeting((codec.METHOD_NO_AUTH,))
                             + codec.client_request(codec.CMD_CONNECT, "127.0.0.1",
                                                    target.port) + early)
                assert recv_exactly(sock, 2) == b"\x05\x00"
                assert recv_reply(sock)[0] == 0
                got = recv_exactly(sock, len(banner))
                time.sleep(SETTLE)  # spliced from here on
                send_all(sock, 4 * MB, b"spliced")
                sock.shutdown(socket.SHUT_WR)
                rest = recv_digest(sock)
                return got, rest

        got, rest = yield threads.deferToThread(client)
        self.assertEqual(got, banner)
        self.assertEqual(rest, (2 * MB, digest_of(2 * MB, b"later")))
        data = yield threads.deferToThread(target.result)
        self.assertEqual(data[:len(early)], early)
        self.assertEqual(hashlib.sha256(data[len(early):]).digest(),
                         digest_of(4 * MB, b"spliced"))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()

    @defer.inlineCallbacks
    def test_server_writes_before_reading(self) -> Any:
        """While the switch waits for a buffer to drain, the other direction keeps flowing.
        The client's early bytes sit in the proxy's buffer towards a target with a tiny
        receive window that sends 32 MB before it reads anything: the download goes through,
        then the target reads the early bytes (the buffer drains), the relay splices, and
        the rest moves spliced. (The target waits for the splice before its FIN: a relay
        that is already half-closed is left to the protocols, and whether the early bytes
        fit the kernel's send buffer before the FIN came was a race.)"""
        early = b"e" * 60_000

        def serve(sock: socket.socket) -> tuple[int, bytes]:
            send_all(sock, 32 * MB, b"first")
            first, first_digest = recv_digest(sock, len(early))
            assert (first, first_digest) == (len(early), hashlib.sha256(early).digest())
            deadline = time.monotonic() + TIMEOUT
            while self.spliced() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)  # polled from the target's thread; bounded
            sock.shutdown(socket.SHUT_WR)
            rest, rest_digest = recv_digest(sock)
            return first + rest, rest_digest

        target = Target(self, serve, rcvbuf=4096)

        def client() -> tuple[int, bytes]:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT)
            with sock:
                sock.sendall(codec.client_greeting((codec.METHOD_NO_AUTH,))
                             + codec.client_request(codec.CMD_CONNECT, "127.0.0.1",
                                                    target.port) + early)
                assert recv_exactly(sock, 2) == b"\x05\x00"
                assert recv_reply(sock)[0] == 0
                got = recv_digest(sock)
                sock.sendall(b"after")
                sock.shutdown(socket.SHUT_WR)
                return got

        down = yield threads.deferToThread(client)
        self.assertEqual(down, (32 * MB, digest_of(32 * MB, b"first")))
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (len(early) + 5, hashlib.sha256(b"after").digest()))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()

    @defer.inlineCallbacks
    def test_inbound_closes_all(self) -> Any:
        """The inbound's service closing its connections (closeAll, a transport's
        loseConnection) ends a spliced relay: both sockets close, protocols hear of it."""
        closed = threading.Event()

        def serve(sock: socket.socket) -> bytes:
            data = sock.recv(100)
            sock.settimeout(TIMEOUT)
            while sock.recv(65536):
                pass
            closed.set()
            return data

        target = Target(self, serve)
        sock = yield threads.deferToThread(socks_connect, self.port, "127.0.0.1", target.port)
        self.addCleanup(sock.close)
        sock.sendall(b"x")
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual(self.spliced(), 1)
        factory = next(s.factory for s in self.service if isinstance(s, InboundService))
        factory.closeAll()
        eof = yield threads.deferToThread(sock.recv, 10)
        self.assertEqual(eof, b"")
        yield threads.deferToThread(closed.wait, TIMEOUT)
        self.assertTrue(closed.is_set())
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, b"x")
        yield self.assertNothingLeft()


class ClosingTests(SpliceTestBase):
    """A spliced relay that ends abruptly still reaches every protocol's connectionLost."""

    def inbound_protocols(self) -> list[Any]:
        factory = next(s.factory for s in self.service if isinstance(s, InboundService))
        return list(factory.connections)

    @defer.inlineCallbacks
    def assertAllClosed(self) -> Any:
        for _ in range(100):
            protocols = self.inbound_protocols()
            if all(p.transport.disconnected for p in protocols):
                break
            yield task.deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(protocols)
        for protocol in protocols:
            self.assertTrue(protocol.transport.disconnected)
            self.assertIs(protocol.tunnel.phase, Phase.CLOSED)  # the tunnel heard of it
        yield self.assertNothingLeft()

    @defer.inlineCallbacks
    def test_client_resets(self) -> Any:
        """The client resets mid-transfer: the target's connection closes too."""
        target = Target(self, lambda s: recv_digest(s)[0])

        def client() -> None:
            sock = socks_connect(self.port, "127.0.0.1", target.port)
            time.sleep(SETTLE)
            send_all(sock, MB, b"then reset")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        yield threads.deferToThread(client)
        served = yield threads.deferToThread(target.result)
        self.assertLessEqual(served, MB)
        self.assertEqual(self.spliced(), 1)
        yield self.assertAllClosed()

    @defer.inlineCallbacks
    def test_abort_connection(self) -> Any:
        """``abortConnection`` on a spliced transport: both sides close."""
        target = Target(self, lambda s: recv_digest(s))
        sock = yield threads.deferToThread(socks_connect, self.port, "127.0.0.1", target.port)
        self.addCleanup(sock.close)
        yield task.deferLater(reactor, SETTLE, lambda: None)
        self.assertEqual(self.spliced(), 1)
        [protocol] = self.inbound_protocols()
        protocol.transport.abortConnection()
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (0, hashlib.sha256().digest()))
        try:
            rest = yield threads.deferToThread(sock.recv, 10)
        except ConnectionResetError:
            rest = b""
        self.assertEqual(rest, b"")
        yield self.assertAllClosed()


    @defer.inlineCallbacks
    def test_reactor_drops_descriptor(self) -> Any:
        """The reactor drops a socket end (as on a hang-up, an error or its own shutdown):
        that side's protocol hears connectionLost at once, the other side closes."""
        target = Target(self, lambda s: recv_digest(s))
        sock = yield threads.deferToThread(socks_connect, self.port, "127.0.0.1", target.port)
        self.addCleanup(sock.close)
        yield task.deferLater(reactor, SETTLE, lambda: None)
        [protocol] = self.inbound_protocols()
        [end] = [e for e in socket_ends() if e.transport is protocol.transport]
        reactor.removeReader(end)
        reactor.removeWriter(end)
        end.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(protocol.transport.disconnected)
        self.assertIs(protocol.tunnel.phase, Phase.CLOSED)
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (0, hashlib.sha256().digest()))
        yield self.assertAllClosed()


class IdleTests(SpliceTestBase):
    policy = {"levels": {"0": {"connIdle": 1}}}

    @defer.inlineCallbacks
    def test_idle_timeout_closes(self) -> Any:
        """connIdle closes a spliced relay that carried data and then went quiet."""
        target = Target(self, lambda s: (s.sendall(s.recv(100)), recv_digest(s))[1])

        def client() -> tuple[bytes, bytes, float]:
            with socks_connect(self.port, "127.0.0.1", target.port) as sock:
                sock.settimeout(TIMEOUT)
                time.sleep(SETTLE)
                sock.sendall(b"ping")
                echo = recv_exactly(sock, 4)
                start = time.monotonic()
                eof = sock.recv(10)
                return echo, eof, time.monotonic() - start

        echo, eof, waited = yield threads.deferToThread(client)
        self.assertEqual((echo, eof), (b"ping", b""))
        self.assertLess(waited, 3.5)
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (0, hashlib.sha256().digest()))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()


class DokodemoSpliceTests(SpliceTestBase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.target = Target(self, lambda s: both_ways(s, 20 * MB, b"dokodemo down"))
        self.inbound = {"protocol": "dokodemo-door",
                        "settings": {"address": "127.0.0.1", "port": self.target.port,
                                     "network": "tcp"}}
        yield super().setUp()

    @defer.inlineCallbacks
    def test_both_ways(self) -> Any:
        """dokodemo-door to freedom splices too."""
        def client() -> tuple[int, bytes]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
                return both_ways(s, 20 * MB, b"dokodemo up")

        down = yield threads.deferToThread(client)
        self.assertEqual(down, (20 * MB, digest_of(20 * MB, b"dokodemo down")))
        up = yield threads.deferToThread(self.target.result)
        self.assertEqual(up, (20 * MB, digest_of(20 * MB, b"dokodemo up")))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()


class HTTPConnectSpliceTests(SpliceTestBase):
    inbound = {"protocol": "http", "settings": {}}

    @defer.inlineCallbacks
    def test_connect_both_ways(self) -> Any:
        """HTTP CONNECT to freedom splices."""
        target = Target(self, lambda s: both_ways(s, 20 * MB, b"http down"))

        def client() -> tuple[int, bytes]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
                s.sendall(f"CONNECT 127.0.0.1:{target.port} HTTP/1.1\r\n"
                          f"Host: 127.0.0.1:{target.port}\r\n\r\n".encode())
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    head += s.recv(1)
                assert head.startswith(b"HTTP/1.1 200"), head
                return both_ways(s, 20 * MB, b"http up")

        down = yield threads.deferToThread(client)
        self.assertEqual(down, (20 * MB, digest_of(20 * MB, b"http down")))
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (20 * MB, digest_of(20 * MB, b"http up")))
        self.assertEqual(self.spliced(), 1)
        yield self.assertNothingLeft()


class DisabledTests(SpliceTestBase):
    @defer.inlineCallbacks
    def test_env_off(self) -> Any:
        """VTWIST_SPLICE=0: the same transfer goes through the protocols."""
        target = Target(self, lambda s: both_ways(s, 4 * MB, b"d"))

        def client() -> tuple[int, bytes]:
            with socks_connect(self.port, "127.0.0.1", target.port) as sock:
                return both_ways(sock, 4 * MB, b"u")

        with mock.patch.dict(os.environ, {"VTWIST_SPLICE": "0"}):
            down = yield threads.deferToThread(client)
        self.assertEqual(down[0], 4 * MB)
        self.assertEqual(down, (4 * MB, digest_of(4 * MB, b"d")))
        served = yield threads.deferToThread(target.result)
        self.assertEqual(served, (4 * MB, digest_of(4 * MB, b"u")))
        self.assertEqual(self.spliced(), 0)


class FallbackTests(SynchronousTestCase):
    """Where splicing is not possible the relay stays as it was."""

    def test_not_tcp(self) -> None:
        """Transports that are not plain TCP connections (TLS, a layer, a VMess stream, a
        test double) are declined, with a real reactor."""
        a, b = StringTransport(), StringTransport()
        proto = RelayProtocol()
        proto.makeConnection(b)
        b.protocol = proto  # type: ignore[attr-defined]
        declined = stats.declined
        relay = Relay(a, b, reactor)
        self.assertEqual(stats.declined, declined + 1)
        self.assertIsNone(relay.splice)
        relay.finish()

    def test_no_fd_reactor(self) -> None:
        """A clock that is not a reactor with file descriptors: nothing is tried."""
        clock = task.Clock()
        proto = RelayProtocol()
        out = StringTransport()
        proto.makeConnection(out)
        out.protocol = proto  # type: ignore[attr-defined]
        relay = Relay(StringTransport(), out, clock)
        self.assertEqual(len(clock.getDelayedCalls()), 1)  # the idle timer only
        self.assertIsNone(relay.splice)

    def test_other_platform(self) -> None:
        with mock.patch.object(splice.sys, "platform", "darwin"):
            self.assertFalse(splice.enabled())
        with mock.patch.object(splice, "os", mock.Mock(spec=[])):
            self.assertFalse(splice.enabled())
        self.assertTrue(splice.enabled())


class SetupFailureTests(TestCase):
    """A pipe that cannot be made leaves the relay on the protocols."""

    @defer.inlineCallbacks
    def test_pipe_failure(self) -> Any:
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pipes = PipeWatch(self)
        client = yield _connect(port.getHost().port)
        relay_side = yield _connect(port.getHost().port, RelayProtocol)
        relay = Relay(client.transport, relay_side.transport, reactor)
        relay_side.attach(relay)
        declined = stats.declined
        with mock.patch.object(splice.os, "pipe2", side_effect=OSError(24, "EMFILE")):
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertIsNone(relay.splice)
        self.assertEqual(stats.declined, declined + 1)
        self.assertEqual(pipes.still_open(), [])
        relay.finish()
        yield task.deferLater(reactor, 0.05, lambda: None)
        for proto in (client, relay_side):
            self.assertFalse(proto.transport.connected)

    @defer.inlineCallbacks
    def test_small_pipes_are_declined(self) -> Any:
        """A pipe the kernel keeps small (an unprivileged user past the pipe quota gets two
        pages) is not spliced through: the relay stays on the protocols and still relays."""
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pipes = PipeWatch(self)
        client = yield _connect(port.getHost().port, Collecting)
        relay_side = yield _connect(port.getHost().port, RelayProtocol)
        relay = Relay(client.transport, relay_side.transport, reactor)
        relay_side.attach(relay)
        declined = stats.declined
        with mock.patch.object(splice, "PIPE_SIZE", 4096):  # the real kernel makes it so
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.assertIsNone(relay.splice)
        self.assertEqual(stats.declined, declined + 1)
        self.assertEqual(pipes.still_open(), [])
        # the echo server answers the relay's outbound side; the relay hands it to the
        # client's connection, whose echo comes back to the client's protocol
        relay_side.transport.write(b"still relayed")
        for _ in range(100):
            yield task.deferLater(reactor, 0.01, lambda: None)
            if b"".join(client.received) == b"still relayed":
                break
        self.assertEqual(b"".join(client.received), b"still relayed")
        self.assertEqual(relay.bytes[1], len(b"still relayed"))
        relay.finish()
        yield task.deferLater(reactor, 0.05, lambda: None)
        for proto in (client, relay_side):
            self.assertFalse(proto.transport.connected)


class Collecting(Protocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def _connect(port: int, protocol: type[Protocol] = Protocol) -> defer.Deferred[Any]:
    from twisted.internet.endpoints import TCP4ClientEndpoint
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(protocol))

