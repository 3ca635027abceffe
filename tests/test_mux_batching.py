"""The Mux.Cool carrier's write buffer and its per-carrier timers: the frames of every
session produced in one reactor turn leave in one carrier write (one VMess chunk), each
session's frames in order; a large write leaves at once; closing the carrier flushes what
is framed; the first-payload wait and the idle close use one timer per carrier."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.mux import frame as F
from vtwist.proxy.mux.client import FIRST_PAYLOAD_WAIT, IDLE_TIMEOUT, MuxPool
from vtwist.proxy.mux.connection import END_DELAY, FLUSH_BYTES
from vtwist.proxy.mux.server import MuxServer
from vtwist.testing.doubles import HalfCloseRecorder, HalfCloseTransport
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.tunnel.relay import RelayProtocol

TARGET = Destination.tcp("example.com", 80)


class RecordingCarrier(HalfCloseTransport):
    """A carrier transport that keeps each ``write`` call apart (``writes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closedWith: bytes | None = None

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        super().write(data)

    def loseConnection(self) -> None:
        self.closedWith = self.value()  # what had been written when the close came
        super().loseConnection()


def decode(data: bytes) -> list[tuple[int, int, bytes | None]]:
    """(id, status, data) of each frame in ``data``."""
    return [(f.session_id, f.status, f.data) for f in F.FrameDecoder().feed(data)]


class _Endpoint:
    def __init__(self, transports: list[RecordingCarrier]) -> None:
        self.transports = transports

    def connect(self, factory: Any) -> Any:
        proto = factory.buildProtocol(None)
        transport = RecordingCarrier()
        transport.protocol = proto
        self.transports.append(transport)
        proto.makeConnection(transport)
        return succeed(proto)


class ServerBatchingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tunnels = RecordingTunnels(self.clock)
        self.carrier = RecordingCarrier()
        self.server = MuxServer(self.tunnels, self.carrier)

    def open(self, *ids: int) -> list[Any]:
        """Sessions ``ids``, connected; their relays."""
        self.server.received(b"".join(F.encode_new(i, TARGET) for i in ids))
        relays = []
        self.targets: list[HalfCloseTransport] = []
        for n, i in enumerate(ids):
            proto = RelayProtocol()
            self.targets.append(HalfCloseTransport())
            proto.makeConnection(self.targets[-1])
            self.tunnels.connects[n][2].callback(proto)
            relays.append(self.server.sessions.get(i).protocol.tunnel.relay)
        self.clock.advance(0)
        self.carrier.writes.clear()
        return relays

    def test_one_turn_one_write_in_order(self) -> None:
        """Replies and Ends of three sessions in one turn: one carrier write, each
        session's frames in the order they were produced."""
        r1, r2, r3 = self.open(1, 2, 3)
        r1.received(1, b"a1")
        r2.received(1, b"b1")
        r1.received(1, b"a2")
        r1.eof(1)
        r3.received(1, b"c1")
        r2.eof(1)
        self.assertEqual(self.carrier.writes, [])  # nothing before the end of the turn
        self.clock.advance(0)
        self.assertEqual(len(self.carrier.writes), 1)
        self.assertEqual(decode(self.carrier.writes[0]), [
            (1, F.KEEP, b"a1"), (2, F.KEEP, b"b1"), (1, F.KEEP, b"a2"), (1, F.END, None),
            (3, F.KEEP, b"c1"), (2, F.END, None)])
        self.assertEqual(self.server.writes, 1)

    def test_large_write_leaves_at_once_after_queued_frames(self) -> None:
        r1, r2 = self.open(1, 2)
        r1.received(1, b"small")
        big = b"z" * FLUSH_BYTES
        r2.received(1, big)
        self.assertEqual(len(self.carrier.writes), 1)  # no wait for the end of the turn
        frames = decode(self.carrier.writes[0])
        self.assertEqual(frames[0], (1, F.KEEP, b"small"))
        self.assertEqual(b"".join(d for i, _, d in frames[1:] if i == 2), big)
        self.assertTrue(all(len(d) <= F.MAX_TCP_DATA for _, _, d in frames if d))

    def test_plain_end_waits_for_company(self) -> None:
        """A plain End with nothing else to send waits; the next frame takes it along, in
        order, in one write."""
        r1, r2 = self.open(1, 2)
        r1.eof(1)
        self.clock.advance(0)
        self.assertEqual(self.carrier.writes, [])
        self.clock.advance(END_DELAY / 2)
        r2.received(1, b"reply")
        self.clock.advance(0)
        self.assertEqual([decode(w) for w in self.carrier.writes],
                         [[(1, F.END, None), (2, F.KEEP, b"reply")]])
        self.clock.advance(END_DELAY)  # its timer finds nothing left to write
        self.assertEqual(len(self.carrier.writes), 1)

    def test_plain_end_alone_leaves_after_its_wait(self) -> None:
        """Ends alone leave together END_DELAY after the first of them; one timer."""
        r1, r2 = self.open(1, 2)
        r1.eof(1)
        self.clock.advance(END_DELAY / 2)
        timers = len(self.clock.getDelayedCalls())
        r2.eof(1)
        self.assertEqual(len(self.clock.getDelayedCalls()), timers)
        self.clock.advance(END_DELAY / 2 - 1e-6)
        self.assertEqual(self.carrier.writes, [])
        self.clock.advance(2e-6)
        self.assertEqual([decode(w) for w in self.carrier.writes],
                         [[(1, F.END, None), (2, F.END, None)]])

    def test_end_with_error_leaves_at_the_end_of_the_turn(self) -> None:
        """A failed session's End (Error bit) does not wait."""
        self.open(1)
        self.server.sessions.get(1).abortConnection()
        self.clock.advance(0)
        (frame,) = F.FrameDecoder().feed(self.carrier.writes[0])
        self.assertEqual((frame.session_id, frame.status, frame.error), (1, F.END, True))

    def test_carrier_lost_cancels_the_end_wait(self) -> None:
        (r1,) = self.open(1)
        r1.eof(1)
        self.server.lost(None)
        self.assertEqual([c for c in self.clock.getDelayedCalls() if c.active()
                          and c.func == self.server._lazyDue], [])

    def test_close_flushes_framed_bytes_first(self) -> None:
        """The client's EOF with the last session's reply and End queued: both are
        written before the carrier closes."""
        (r1,) = self.open(1)
        self.server.eof()
        r1.received(1, b"last words")
        r1.eof(1)  # the last session ends: the carrier closes in this same turn
        self.assertTrue(self.carrier.disconnecting)
        self.assertEqual(decode(self.carrier.closedWith or b""),
                         [(1, F.KEEP, b"last words"), (1, F.END, None)])

    def test_sequence_of_pieces_parsed_as_one(self) -> None:
        """Decoded VMess chunks that split frames anywhere reach the sessions whole."""
        wire = F.encode_new(1, TARGET, b"hello") + b"".join(F.encode_keep(1, b" world"))
        self.server.receivedSequence([wire[:3], wire[3:17], wire[17:]])
        self.assertEqual(self.tunnels.connects[0][0], TARGET)
        proto = RelayProtocol()
        target = HalfCloseTransport()
        proto.makeConnection(target)
        self.tunnels.connects[0][2].callback(proto)
        self.clock.advance(0)
        self.assertEqual(target.value(), b"hello world")

    def test_session_lost_on_the_next_turn(self) -> None:
        """End with Error: the session's protocol hears connectionLost at the end of the
        turn, not inside the call that read the frame."""
        self.open(1)
        self.server.received(F.encode_end(1, error=True))
        self.assertNotIn(1, self.server.sessions)
        self.assertFalse(self.targets[0].disconnecting)
        self.clock.advance(0)
        self.assertTrue(self.targets[0].disconnecting)


class ClientBatchingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.transports: list[RecordingCarrier] = []
        self.pool = MuxPool(lambda: _Endpoint(self.transports), 8, reactor=self.clock)

    def open(self) -> HalfCloseRecorder:
        got: list[Any] = []
        self.pool.endpoint(TARGET).connect(
            Factory.forProtocol(HalfCloseRecorder)).addCallback(got.append)
        return got[0]

    def test_sessions_of_one_turn_share_a_write(self) -> None:
        apps = [self.open() for _ in range(4)]
        for n, app in enumerate(apps):
            app.transport.write(b"req%d" % n)
        apps[0].transport.loseWriteConnection()
        apps[1].transport.write(b"more")
        carrier = self.transports[0]
        self.assertEqual(carrier.writes, [])
        self.clock.advance(0)
        self.assertEqual(len(carrier.writes), 1)
        self.assertEqual(decode(carrier.writes[0]), [
            (1, F.NEW, b"req0"), (2, F.NEW, b"req1"), (3, F.NEW, b"req2"),
            (4, F.NEW, b"req3"), (1, F.END, None), (2, F.KEEP, b"more")])

    def test_first_payload_wait_one_timer_per_carrier(self) -> None:
        """Quiet sessions opened over time: one pending timer on the carrier however many
        wait; each New goes out alone when its own 100 ms are over, in one write per
        turn."""
        carrier = self.pool.carriers  # filled by the first open
        self.open()
        timers = len(self.clock.getDelayedCalls())
        for _ in range(5):
            self.open()
        self.assertEqual(len(self.clock.getDelayedCalls()), timers)
        self.clock.advance(FIRST_PAYLOAD_WAIT / 2)
        late = [self.open() for _ in range(2)]
        self.assertEqual(len(self.clock.getDelayedCalls()), timers)
        late[0].transport.write(b"early data")  # announced with its data: not alone later
        self.clock.advance(FIRST_PAYLOAD_WAIT / 2)
        self.clock.advance(0)
        wire = self.transports[0]
        self.assertEqual(decode(b"".join(wire.writes)), [
            (7, F.NEW, b"early data"), *[(i, F.NEW, None) for i in range(1, 7)]])
        wire.writes.clear()
        self.clock.advance(FIRST_PAYLOAD_WAIT / 2)
        self.clock.advance(0)
        self.assertEqual(decode(b"".join(wire.writes)), [(8, F.NEW, None)])
        self.assertEqual(len(carrier), 1)

    def test_idle_timer_not_rearmed_per_session(self) -> None:
        """A carrier that goes empty at 0, busy at 10, empty again at 12 closes at 28
        (16 s after it last became empty), and sessions coming and going in between do
        not add timers."""
        self.open().transport.loseConnection()
        self.clock.advance(0)
        timers = len(self.clock.getDelayedCalls())
        self.clock.advance(10)
        app = self.open()
        self.clock.advance(2)
        for _ in range(20):
            self.open().transport.loseConnection()
        app.transport.loseConnection()
        self.clock.advance(0)
        self.assertLessEqual(len(self.clock.getDelayedCalls()), timers)
        self.clock.advance(IDLE_TIMEOUT - 0.5)
        self.assertFalse(self.transports[0].disconnecting)
        self.clock.advance(0.5)
        self.assertTrue(self.transports[0].disconnecting)

    def test_pool_close_flushes_queued_frames(self) -> None:
        app = self.open()
        app.transport.write(b"last")
        app.transport.loseConnection()
        self.pool.close()
        carrier = self.transports[0]
        self.assertTrue(carrier.disconnecting)
        self.assertEqual(decode(carrier.closedWith or b""),
                         [(1, F.NEW, b"last"), (1, F.END, None)])
