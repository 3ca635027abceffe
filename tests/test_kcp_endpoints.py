"""mKCP over real loopback sockets, vtwist <-> vtwist: endpoints, demux, flow control, loss."""

from __future__ import annotations

import hashlib
import os
import random
import socket
from typing import Any

from twisted.internet import defer, error, protocol, reactor, task, udp
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.trial.unittest import TestCase

from vtwist.testing.doubles import Collector, Echo
from vtwist.testing.udprelay import Impairment, UDPImpairmentRelay
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.endpoints import KCPClientEndpoint, KCPServerEndpoint
from vtwist.transport.kcp.protocol import make_packer
from vtwist.transport.kcp.segment import CMD_PING, CMD_TERMINATE, encode_cmd, encode_data
from vtwist.transport.kcp.session import State

LINGER = 0.3


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class Sink(protocol.Protocol):
    """Counts and hashes what arrives; can be paused from outside."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.count = 0
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.hash.update(data)
        self.count += len(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback([reason])


class Pusher(protocol.Protocol):
    """Writes ``data`` as a streaming producer, honouring pause/resume."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.off = 0
        self.paused = False
        self.pauses = 0
        self.echo = hashlib.sha256()
        self.received = 0
        self.done: defer.Deferred = defer.Deferred()
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True
        self.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.off < len(self.data):
            self.transport.write(self.data[self.off:self.off + 65536])
            self.off += 65536
        if self.off >= len(self.data) and self.transport.producer is self:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.off = len(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.echo.update(data)
        self.received += len(data)
        if self.received >= len(self.data) and not self.done.called:
            self.done.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback([reason])
        if not self.done.called:
            self.done.errback(AssertionError(f"lost after {self.received} bytes: {reason}"))


class KCPEndpointTests(TestCase):
    timeout = 60

    async def server(self, factory: Any, config: KCPConfig | None = None) -> Any:
        port = await KCPServerEndpoint(reactor, 0, "127.0.0.1", config).listen(factory)
        self.addCleanup(port.stopListening)
        return port

    async def client(self, port: int, proto: Any, config: KCPConfig | None = None,
                     **kwargs: Any) -> Any:
        ep = KCPClientEndpoint(reactor, "127.0.0.1", port, config, linger=LINGER, **kwargs)
        p = await ep.connect(protocol.Factory.forProtocol(lambda: proto))
        self.addCleanup(self._abort, p)
        return p

    def _abort(self, proto: Any) -> defer.Deferred:
        if not proto.transport.terminated.called:
            proto.transport.abortConnection()
        return proto.transport.terminated

    async def close_client(self, proto: Any) -> None:
        proto.transport.loseConnection()
        await proto.transport.terminated

    def test_endpoint_strings(self) -> None:
        s = serverFromString(reactor, "kcp:port=9000:interface=127.0.0.1:header=dtls:seed=abc:tti=20")
        self.assertIsInstance(s, KCPServerEndpoint)
        self.assertEqual((s.port, s.interface), (9000, "127.0.0.1"))
        self.assertEqual((s.config.header_type, s.config.seed, s.config.tti), ("dtls", "abc", 20))
        c = clientFromString(reactor, "kcp:host=127.0.0.1:port=9000:header=utp:seed=")
        self.assertIsInstance(c, KCPClientEndpoint)
        self.assertEqual((c.host, c.port, c.config.header_type, c.config.seed),
                         ("127.0.0.1", 9000, "utp", ""))
        self.assertIsNone(clientFromString(reactor, "kcp:host=h:port=1").config.seed)
        self.assertRaises(ValueError, clientFromString, reactor, "kcp:host=h:port=1:bogus=1")
        self.assertRaises(ValueError, serverFromString, reactor, "kcp:port=1:mtu=100")

    @defer.inlineCallbacks
    def test_client_before_server_listens(self) -> Any:
        """Without a handshake deadline (``handshake=None``): the server's port is closed for
        the first datagrams (ICMP unreachable), then opens: the client's socket survives and
        the session goes through once the server is up. (With the default deadline the ICMP
        error is a refusal: tests/test_kcp_handshake.py.)"""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = Collector()
        yield defer.ensureDeferred(self.client(port, client, handshake=None))
        client.transport.write(b"early hello")
        yield sleep(0.5)  # several (re)transmissions hit the closed port meanwhile
        listening = yield KCPServerEndpoint(reactor, port, "127.0.0.1").listen(
            protocol.Factory.forProtocol(Echo))
        self.addCleanup(listening.stopListening)
        yield client.wait(len(b"early hello"))
        self.assertEqual(bytes(client.buf), b"early hello")

    def test_factory_failure_closes_the_socket(self) -> defer.Deferred:
        class Failing(protocol.Factory):
            def buildProtocol(self, addr: Any) -> Any:
                raise ZeroDivisionError("factory bug")

        class Refusing(protocol.Factory):
            def buildProtocol(self, addr: Any) -> Any:
                return None

        async def run() -> None:
            def udp_ports() -> set:
                return {r for r in reactor.getReaders() if isinstance(r, udp.Port)}

            before = udp_ports()
            ep = KCPClientEndpoint(reactor, "127.0.0.1", 9, linger=LINGER)
            with self.assertRaises(ZeroDivisionError):
                await ep.connect(Failing())
            with self.assertRaises(error.ConnectionRefusedError):
                await ep.connect(Refusing())
            await sleep(0)
            self.assertEqual(udp_ports(), before, "UDP sockets left open")
        return defer.ensureDeferred(run())

    def test_plugin_module_is_cheap(self) -> None:
        """The endpoint dropins load only the small parser-declaration module of vtwist."""
        import subprocess
        import sys

        dropins = ("kcp", "ws", "h2", "quic_ds", "link")
        code = ("import sys; "
                + "; ".join(f"import twisted.plugins.vtwist_{d}_endpoints" for d in dropins)
                + "; print(sorted(m for m in sys.modules if m.startswith('vtwist')))")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=root, env=env)
        self.assertEqual(out.stdout.strip(),
                         str(["vtwist", "vtwist.transport", "vtwist.transport.plugin_parsers"]))

    def test_echo_latency(self) -> defer.Deferred:
        async def run() -> None:
            port = await self.server(protocol.Factory.forProtocol(Echo),
                                     KCPConfig(header_type="dtls"))
            c = await self.client(port.getHost().port, Collector(), KCPConfig(header_type="dtls"))
            times = await c.echo_times(50)
            self.assertLess(times[25], 0.010, f"1 KiB echo p50 {times[25] * 1000:.2f} ms")
            await self.close_client(c)
        return defer.ensureDeferred(run())

    def test_64_parallel_streams_one_port(self) -> defer.Deferred:
        async def run() -> None:
            cfg = KCPConfig(header_type="dtls", seed="s")
            port = await self.server(protocol.Factory.forProtocol(Echo), cfg)
            rng = random.Random(64)
            clients = [Pusher(rng.randbytes(200_000)) for _ in range(64)]
            for p in clients:
                await self.client(port.getHost().port, p, cfg)
            await defer.gatherResults([p.done for p in clients])
            self.assertEqual(port.listener.stats.sessions_created, 64)
            for p in clients:
                self.assertEqual(p.echo.digest(), hashlib.sha256(p.data).digest())
            convs = {p.transport.conv for p in clients}
            self.assertEqual(len(convs), 64)
            await defer.gatherResults([defer.ensureDeferred(self.close_client(p)) for p in clients])
            for _ in range(50):
                if not port.listener.sessions:
                    break
                await sleep(0.05)
            self.assertEqual(port.listener.sessions, {})
        return defer.ensureDeferred(run())

    def test_ipv6(self) -> defer.Deferred:
        async def run() -> None:
            port = await KCPServerEndpoint(reactor, 0, "::1").listen(
                protocol.Factory.forProtocol(Echo))
            self.addCleanup(port.stopListening)
            ep = KCPClientEndpoint(reactor, "::1", port.getHost().port, linger=LINGER)
            c = await ep.connect(protocol.Factory.forProtocol(Collector))
            self.addCleanup(self._abort, c)
            c.transport.write(b"six" * 1000)
            await c.wait(3000)
            self.assertEqual(bytes(c.buf), b"six" * 1000)
            self.assertEqual(c.transport.getPeer().host, "::1")
            await self.close_client(c)
        return defer.ensureDeferred(run())

    def test_close_terminates_both_sides(self) -> defer.Deferred:
        async def run() -> None:
            sink = Sink()
            port = await self.server(protocol.Factory.forProtocol(lambda: sink))
            c = await self.client(port.getHost().port, Collector())
            data = os.urandom(300_000)
            c.transport.write(data)
            c.transport.loseConnection()
            (reason,) = await sink.lost
            self.assertEqual(reason.type.__name__, "ConnectionDone")
            self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
            (reason,) = await c.lost
            self.assertEqual(reason.type.__name__, "ConnectionDone")
            await c.transport.terminated
            self.assertEqual(c.transport.session.state, State.TERMINATED)
            self.assertEqual(port.listener.sessions, {})
        return defer.ensureDeferred(run())

    def test_slow_reader_backpressure(self) -> defer.Deferred:
        async def run() -> None:
            sink = Sink()
            cfg = KCPConfig(downlink_capacity=1, write_buffer_bytes=1024 * 1024)
            port = await self.server(protocol.Factory.forProtocol(lambda: sink), cfg)
            data = random.Random(9).randbytes(8_000_000)
            pusher = Pusher(data)
            await self.client(port.getHost().port, pusher, cfg)
            await sleep(0.05)
            (server_conn,) = port.listener.sessions.values()
            server_conn.pauseProducing()
            got_before = sink.count
            await sleep(0.5)
            s = server_conn.session
            self.assertLessEqual(len(s.receiver.buffer), s.rcv_wnd)
            self.assertLess(sink.count - got_before, 100_000)
            self.assertGreater(pusher.pauses, 0)
            self.assertLess(pusher.off, len(data))
            self.assertLessEqual(pusher.transport.session.send_queue_segments,
                                 cfg.send_buffer_segs + 64)
            server_conn.resumeProducing()
            for _ in range(400):
                if sink.count >= len(data):
                    break
                await sleep(0.05)
            self.assertEqual(sink.count, len(data))
            self.assertEqual(sink.hash.digest(), hashlib.sha256(data).digest())
            pusher.done.addErrback(lambda _: None)  # the sink does not echo
            await self.close_client(pusher)
        return defer.ensureDeferred(run())

    def test_ten_megabytes_through_lossy_relay(self) -> defer.Deferred:
        async def run() -> None:
            cfg = KCPConfig(header_type="dtls")
            port = await self.server(protocol.Factory.forProtocol(Echo), cfg)
            imp = Impairment(loss=0.10, delay=0.002, jitter=0.002, reorder=0.05,
                             reorder_gap=0.004, duplicate=0.05)
            relay = UDPImpairmentRelay(reactor, ("127.0.0.1", port.getHost().port),
                                       imp, imp, seed=10)
            rport = relay.start()
            self.addCleanup(relay.stop)
            data = random.Random(10).randbytes(10_000_000)
            pusher = Pusher(data)
            await self.client(rport, pusher, cfg)
            await pusher.done
            self.assertEqual(pusher.echo.digest(), hashlib.sha256(data).digest())
            for d in relay.stats.values():
                self.assertGreater(d.dropped, 0)
                self.assertGreater(d.duplicated, 0)
                self.assertGreater(d.reordered, 0)
            await self.close_client(pusher)
        return defer.ensureDeferred(run())


class ListenerRuleTests(TestCase):
    """Unknown-session rules, authentication failures, tombstones (raw datagrams)."""

    timeout = 30

    async def setup_listener(self, cfg: KCPConfig) -> tuple[Any, socket.socket, list]:
        protos: list = []

        def build() -> Collector:
            p = Collector()
            protos.append(p)
            return p

        port = await KCPServerEndpoint(reactor, 0, "127.0.0.1", cfg).listen(
            protocol.Factory.forProtocol(build))
        self.addCleanup(port.stopListening)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port.getHost().port))
        self.addCleanup(sock.close)
        return port, sock, protos

    def test_rules(self) -> defer.Deferred:
        async def run() -> None:
            cfg = KCPConfig(header_type="dtls")
            port, sock, protos = await self.setup_listener(cfg)
            listener = port.listener
            packer = make_packer(cfg)
            sock.send(b"\x17\xfe\xfd" + os.urandom(40))
            sock.send(packer.pack(encode_cmd(0x55, CMD_TERMINATE, 0, 0, 0, 100)))
            await sleep(0.1)
            self.assertEqual(listener.packer.auth_failures, 1)
            self.assertEqual(listener.stats.unknown_terminate, 1)
            self.assertEqual(listener.sessions, {})
            # any other segment creates a session, which answers
            sock.send(packer.pack(encode_data(0x55, 0, 0, 0, 0, b"hello")))
            await sleep(0.1)
            self.assertEqual(len(listener.sessions), 1)
            self.assertEqual(bytes(protos[0].buf), b"hello")
            reply = sock.recv(4096)
            self.assertEqual(reply[:3], b"\x17\xfe\xfd")
            # the peer terminates: the session ends and leaves no zombie
            sock.send(packer.pack(encode_cmd(0x55, CMD_TERMINATE, 0, 1, 0, 100)))
            await sleep(0.1)
            self.assertEqual(listener.sessions, {})
            self.assertEqual(protos[0].lost.called, True)
            sock.send(packer.pack(encode_cmd(0x55, CMD_PING, 0, 1, 0, 100)))
            await sleep(0.1)
            self.assertEqual(listener.sessions, {})
            self.assertEqual(listener.stats.tombstone_hits, 1)
            self.assertEqual(listener.stats.sessions_created, 1)
            # the stray segment is answered with TERMINATE
            replies = []
            try:
                while True:
                    replies.append(sock.recv(4096))
            except BlockingIOError:
                pass
            from vtwist.transport.kcp.segment import parse_segments

            last = parse_segments(packer.unpack(replies[-1]))
            self.assertEqual(last[0].cmd, CMD_TERMINATE)
        return defer.ensureDeferred(run())
