"""The Mux.Cool client pool over fake carriers and a fake clock: carrier reuse and
concurrency, the 16 s idle close, KeepAlive on quiet carriers (sent and received), the
100 ms first-payload wait, the server dropping a carrier."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.mux import frame as F
from vtwist.proxy.mux.client import IDLE_TIMEOUT, KEEPALIVE_INTERVAL, MuxPool
from vtwist.testing.doubles import HalfCloseRecorder, HalfCloseTransport

TARGET = Destination.tcp("example.com", 80)


class _FakeServerEndpoint:
    """Each connect: a carrier protocol on a HalfCloseTransport, kept in ``transports``."""

    def __init__(self, transports: list[HalfCloseTransport]) -> None:
        self.transports = transports

    def connect(self, factory: Any) -> Any:
        proto = factory.buildProtocol(None)
        transport = HalfCloseTransport()
        transport.protocol = proto
        self.transports.append(transport)
        proto.makeConnection(transport)
        return succeed(proto)


class _Refusing(Factory):
    def buildProtocol(self, addr: Any) -> None:
        return None


class PoolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.transports: list[HalfCloseTransport] = []
        self.pool = MuxPool(lambda: _FakeServerEndpoint(self.transports), 8,
                            reactor=self.clock)

    def open(self, target: Destination = TARGET) -> HalfCloseRecorder:
        got: list[Any] = []
        self.pool.endpoint(target).connect(
            Factory.forProtocol(HalfCloseRecorder)).addCallback(got.append)
        self.assertEqual(len(got), 1)
        return got[0]

    def frames(self, index: int = 0) -> list[F.Frame]:
        """The frames carrier ``index`` wrote (at the end of the reactor turn)."""
        self.clock.advance(0)
        out = F.FrameDecoder().feed(self.transports[index].value())
        self.transports[index].clear()
        return out

    def test_concurrency_then_new_carrier(self) -> None:
        apps = [self.open() for _ in range(9)]
        self.assertEqual(len(self.transports), 2)
        self.assertEqual(self.pool.dialed, 2)
        apps[0].transport.loseConnection()
        self.open()  # room again on the first carrier
        self.assertEqual(len(self.transports), 2)

    def test_sessions_stop_counting_once_end_goes_either_way(self) -> None:
        """As 4.34: a session counts against ``concurrency`` until End went either way
        (our half-close, the server's End, an error End, an abort, a factory refusal);
        the carrier's count matches its live sessions after each."""
        pool = MuxPool(lambda: _FakeServerEndpoint(self.transports), 3, reactor=self.clock)
        self.pool = pool

        def count(carrier: Any) -> int:
            return sum(not (s.sentEnd or s.gotEnd) for s in carrier.sessions.live.values())

        apps = [self.open() for _ in range(3)]
        [carrier] = pool.carriers
        self.assertTrue(carrier.full)
        self.assertEqual((carrier.unended, count(carrier)), (3, 3))
        apps[0].transport.write(b"q")
        apps[0].transport.loseWriteConnection()  # End sent, the session still receives
        self.assertEqual((carrier.unended, count(carrier)), (2, 2))
        self.assertFalse(carrier.full)
        apps.append(self.open())
        self.assertEqual(len(self.transports), 1)
        carrier.dataReceived(F.encode_end(2))  # the server's End: half-closed our way
        self.assertTrue(apps[1].readLost)
        self.assertEqual((carrier.unended, count(carrier)), (2, 2))
        carrier.dataReceived(F.encode_end(1))  # both ways now: the session is over
        self.assertNotIn(1, carrier.sessions)
        self.assertEqual((carrier.unended, count(carrier)), (2, 2))
        carrier.dataReceived(F.encode_end(3, error=True))
        apps[3].transport.abortConnection()
        self.assertEqual((carrier.unended, count(carrier)), (0, 0))
        apps[1].transport.loseConnection()
        self.assertEqual((carrier.unended, len(carrier.sessions)), (0, 0))
        refused: list[Any] = []
        for factory in (_Refusing(), Factory.forProtocol(lambda: None)):  # None; raises
            pool.endpoint(TARGET).connect(factory).addErrback(refused.append)
            self.assertEqual((carrier.unended, len(carrier.sessions)), (0, 0))
        self.assertEqual(len(refused), 2)
        apps = [self.open() for _ in range(4)]
        self.assertEqual(len(self.transports), 2)  # the fourth did not fit
        self.assertEqual((carrier.unended, count(carrier)), (3, 3))
        self.transports[0].protocol.connectionLost(None)  # the carrier goes: all over
        self.assertEqual((carrier.unended, len(carrier.sessions)), (0, 0))

    def test_first_payload_wait(self) -> None:
        app = self.open()
        self.assertEqual(self.frames(), [])
        app.transport.write(b"hello")
        [new] = self.frames()
        self.assertEqual((new.status, new.data, new.target), (F.NEW, b"hello", TARGET))
        quiet = self.open()
        self.clock.advance(0.1)
        [new] = self.frames()
        self.assertEqual((new.session_id, new.status, new.data), (2, F.NEW, None))
        quiet.transport.write(b"x" * 20000)
        self.assertEqual([len(f.data) for f in self.frames()], [8192, 8192, 3616])

    def test_idle_close_within_16s(self) -> None:
        app = self.open()
        app.transport.write(b"x")
        app.transport.loseConnection()
        self.clock.advance(IDLE_TIMEOUT - 0.5)
        self.assertFalse(self.transports[0].disconnecting)
        self.clock.advance(0.5)
        self.assertTrue(self.transports[0].disconnecting)
        self.assertEqual(self.pool.carriers, [])
        self.open()  # a fresh carrier
        self.assertEqual(len(self.transports), 2)

    def test_new_session_cancels_idle_close(self) -> None:
        self.open().transport.loseConnection()
        self.clock.advance(IDLE_TIMEOUT - 1)
        self.open()
        self.clock.advance(IDLE_TIMEOUT * 3)
        self.assertFalse(self.transports[0].disconnecting)

    def test_keepalive_on_quiet_carrier(self) -> None:
        app = self.open()
        app.transport.write(b"x")
        self.frames()
        self.clock.advance(KEEPALIVE_INTERVAL)  # wrote in that interval: nothing
        self.assertEqual(self.frames(), [])
        self.clock.advance(KEEPALIVE_INTERVAL)
        [alive] = self.frames()
        self.assertEqual(alive.status, F.KEEPALIVE)
        app.transport.write(b"y")
        self.clock.advance(KEEPALIVE_INTERVAL)  # traffic again: no KeepAlive
        self.assertEqual([f.status for f in self.frames()], [F.KEEP])
        self.clock.pump([KEEPALIVE_INTERVAL] * 4)
        self.assertEqual([f.status for f in self.frames()], [F.KEEPALIVE] * 4)
        self.assertEqual(self.pool.carriers[0].keepalives, 5)

    def test_no_keepalive_without_sessions(self) -> None:
        pool = MuxPool(lambda: _FakeServerEndpoint(self.transports), 8, reactor=self.clock,
                       idle_timeout=1000)
        self.pool = pool
        app = self.open()
        app.transport.write(b"x")
        app.transport.loseConnection()
        self.frames()
        self.clock.pump([KEEPALIVE_INTERVAL] * 3)
        self.assertEqual(self.frames(), [])

    def test_keepalive_disabled(self) -> None:
        self.pool = MuxPool(lambda: _FakeServerEndpoint(self.transports), 8,
                            reactor=self.clock, keepalive_interval=0)
        self.open().transport.write(b"x")
        self.frames()
        self.clock.advance(KEEPALIVE_INTERVAL * 3)
        self.assertEqual(self.frames(), [])

    def test_keepalive_received(self) -> None:
        """KeepAlive from the server (with or without data) is read and dropped."""
        app = self.open()
        app.transport.write(b"x")
        carrier = self.pool.carriers[0]
        carrier.dataReceived(F.encode_keepalive() + bytes.fromhex("0004000004010003000000")
                             + b"".join(F.encode_keep(1, b"reply")))
        self.assertEqual(bytes(app.data), b"reply")
        self.assertIsNone(carrier.failed)

    def test_server_drops_carrier(self) -> None:
        apps = [self.open() for _ in range(3)]
        self.transports[0].protocol.connectionLost(None)
        self.clock.advance(0)
        for app in apps:
            self.assertTrue(app.lost.check(ConnectionLost))
        self.open()
        self.assertEqual(len(self.transports), 2)

    def test_server_end_closes_session(self) -> None:
        app = self.open()
        app.transport.write(b"q")
        self.pool.carriers[0].dataReceived(
            b"".join(F.encode_keep(1, b"answer")) + F.encode_end(1))
        self.assertEqual(bytes(app.data), b"answer")
        self.assertTrue(app.readLost)

    def test_pool_close_cancels_idle_timer(self) -> None:
        self.open().transport.loseConnection()
        self.clock.advance(0)
        self.pool.close()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_runs_of_keep_frames_arrive_as_one_piece(self) -> None:
        """Consecutive Keep frames of one session: one dataReceived; order kept across
        sessions; data before that session's End; datagrams stay one per frame."""
        calls: dict[int, list[bytes]] = {1: [], 2: []}
        apps = []
        for sid in (1, 2):
            app = self.open()
            app.transport.write(b"go")
            app.dataReceived = calls[sid].append  # type: ignore[method-assign]
            apps.append(app)
        carrier = self.pool.carriers[0]
        wire = b"".join([*F.split_stream(1, b"a" * 20000), *F.encode_keep(2, b"b1"),
                         *F.encode_keep(1, b"c"), *F.encode_keep(2, b"b2"),
                         *F.encode_keep(2, b"b3"), F.encode_end(2)])
        carrier.dataReceived(wire)
        self.assertEqual(calls[1], [b"a" * 20000, b"c"])
        self.assertEqual(calls[2], [b"b1", b"b2b3"])
        self.assertTrue(apps[1].readLost)
        udp: list[bytes] = []
        self.pool.endpoint(Destination.udp("1.1.1.1", 53)).connect(
            Factory.forProtocol(HalfCloseRecorder)).addCallback(
            lambda p: setattr(p, "dataReceived", udp.append) or p.transport.write(b"q"))
        carrier.dataReceived(b"".join([*F.encode_keep(3, b"d1"), *F.encode_keep(3, b"d2")]))
        self.assertEqual(udp, [b"d1", b"d2"])
