"""mKCP loss recovery (issue 17): resends by transmission order, not on the tti tick.

Clock-driven: sessions are fed ACK segments at chosen times, or joined by the simulated
lossy link of :mod:`vtwist.testing.kcplink` under a virtual clock.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.testing.kcplink import LinkProfile, SimulatedPair
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.crypt import make_authenticator
from vtwist.transport.kcp.obfs import make_header
from vtwist.transport.kcp.segment import (
    CMD_PING,
    AckSegment,
    CmdSegment,
    DataSegment,
    parse_segments,
)
from vtwist.transport.kcp.session import Packer, Session

CONV = 0x1234
MSS = KCPConfig().mss


def make_session(**kw) -> Session:
    return Session(CONV, KCPConfig(**kw), Packer(make_header("none"), make_authenticator(None)),
                   0.0)


def sent(session: Session, now: float) -> list:
    """Segments of the datagrams ``session`` sends at ``now``."""
    out = []
    for d in session.datagrams_to_send(now):
        plain = session.packer.unpack(d)
        assert plain is not None
        out.extend(parse_segments(plain))
    return out


def data_numbers(segs: list) -> list[int]:
    return [x.number for x in segs if isinstance(x, DataSegment)]


def ack(s: Session, numbers: list[int], ts: int, now: float, rcv_nxt: int = 0) -> None:
    s.receive_segments([AckSegment(CONV, 0, rcv_nxt + 776, rcv_nxt, ts, numbers)], now)


def next_data(s: Session, within: float = 1.0) -> tuple[float, list[int]]:
    """Run the session's timers until it sends DATA (in ``within`` s); (when, numbers)."""
    first = s.next_timer()
    assert first is not None
    limit = first + within
    while True:
        t = s.next_timer()
        assert t is not None and t < limit, "no DATA before the limit"
        s.handle_timer(t)
        numbers = data_numbers(sent(s, t))
        if numbers:
            return t, numbers


class OrderedLossTests(SynchronousTestCase):
    def test_later_ack_resends_within_a_millisecond(self) -> None:
        """An ACK of segment 2 makes 0 and 1 lost once the 1 ms allowance has passed: they
        go out then (twice each), not on the tick after an rto (V2Ray: >= 100 ms)."""
        s = make_session()
        s.write(b"x" * MSS * 3)
        self.assertEqual(data_numbers(sent(s, 0.0)), [0, 1, 2])
        ack(s, [2], 0, 0.040)
        self.assertEqual(data_numbers(sent(s, 0.040)), [], "still inside the allowance")
        self.assertAlmostEqual(s.next_timer(), 0.041, places=6)
        s.handle_timer(0.041)
        resent = [x for x in sent(s, 0.041) if isinstance(x, DataSegment)]
        self.assertEqual([x.number for x in resent], [0, 1, 0, 1])
        self.assertEqual({x.timestamp for x in resent}, {41})
        self.assertEqual(s.sender.fast_retransmissions, 2)
        self.assertEqual(s.sender.duplicates, 2)

    def test_segment_sent_earlier_is_lost_at_once(self) -> None:
        s = make_session()
        s.write(b"x" * MSS)
        sent(s, 0.0)
        s.write(b"y" * MSS)
        sent(s, 0.010)
        ack(s, [1], 10, 0.050)
        self.assertEqual(data_numbers(sent(s, 0.050)), [0, 0])

    def test_ack_of_older_segment_resends_nothing(self) -> None:
        s = make_session()
        s.write(b"x" * MSS * 3)
        sent(s, 0.0)
        ack(s, [0], 0, 0.040)
        self.assertEqual(data_numbers(sent(s, 0.040)), [])
        self.assertEqual(s.next_timer(), 0.05, "only the tti tick")
        self.assertEqual(s.sender.retransmissions, 0)

    def test_resend_is_not_resent_on_an_ack_of_what_went_before_it(self) -> None:
        s = make_session()
        s.write(b"x" * MSS * 4)
        sent(s, 0.0)
        ack(s, [3], 0, 0.040)
        s.handle_timer(0.041)
        self.assertEqual(data_numbers(sent(s, 0.041)), [0, 1, 2, 0, 1, 2])
        # the resend of 0 arrived; 1 and 2 went out after it, they are not lost yet
        ack(s, [0], 41, 0.081, rcv_nxt=1)
        self.assertEqual(data_numbers(sent(s, 0.081)), [])
        # an ACK of the resend of 2 makes the resend of 1 lost (after its allowance)
        ack(s, [2], 41, 0.082, rcv_nxt=1)
        s.handle_timer(0.083)
        self.assertEqual(data_numbers(sent(s, 0.083)), [1, 1])

    def test_no_copies_with_congestion_control(self) -> None:
        s = make_session(congestion=True)
        s.write(b"x" * MSS * 3)
        sent(s, 0.0)
        ack(s, [2], 0, 0.040)
        s.handle_timer(0.041)
        self.assertEqual(data_numbers(sent(s, 0.041)), [0, 1])
        self.assertEqual(s.sender.duplicates, 0)

    def test_bogus_future_timestamp_is_ignored(self) -> None:
        s = make_session()
        s.write(b"x" * MSS * 3)
        sent(s, 0.0)
        ack(s, [2], 999_999, 0.040)
        self.assertEqual(s.srtt, 0, "no RTT sample from a time stamp in our future")
        s.handle_timer(0.041)
        # segment 2 was still acknowledged and counts as arrived (first transmission)
        self.assertEqual(data_numbers(sent(s, 0.041)), [0, 1, 0, 1])

    def test_loss_check_timer_ends_with_the_session(self) -> None:
        s = make_session()
        s.write(b"x" * MSS * 3)
        sent(s, 0.0)
        ack(s, [2], 0, 0.040)
        sent(s, 0.040)
        self.assertIsNotNone(s.sender.loss_check_at)
        s.abort(0.040)
        self.assertIsNone(s.sender.loss_check_at)
        self.assertIsNone(s.next_timer())


class TimeoutTests(SynchronousTestCase):
    def test_timeout_waits_for_an_rto_without_progress(self) -> None:
        """While ACKs acknowledge something new, a segment past its deadline is not resent
        on the tick (a burst's tail may just be queued); an rto of silence resends it."""
        s = make_session()
        s.write(b"x" * MSS * 6)
        sent(s, 0.0)
        rto = s.rto
        self.assertEqual(rto, 100)
        # acks of 0..4, one every 30 ms, in order (each also the newest transmission acked
        # so far: nothing is lost by order); 5 never arrives
        for i, t in enumerate((0.030, 0.060, 0.090, 0.120, 0.150)):
            ack(s, [i], 0, t, rcv_nxt=i + 1)
            sent(s, t)
        rto = s.rto
        t = 0.150
        while t < 0.150 + rto / 1000 - 0.001:
            t = s.next_timer()
            s.handle_timer(t)
            if t < 0.150 + rto / 1000:
                self.assertEqual(data_numbers(sent(s, t)), [], f"resent at {t}")
        resent: list[int] = []
        while not resent and t < 1.0:
            t = s.next_timer()
            s.handle_timer(t)
            resent = data_numbers(sent(s, t))
        self.assertEqual(resent, [5])
        self.assertGreaterEqual(t, 0.150 + rto / 1000)
        self.assertEqual(s.sender.fast_retransmissions, 0)

    def test_silent_peer_keeps_the_log_bounded(self) -> None:
        """Nothing is acknowledged for 20 s: timeouts resend every segment each rto, and
        the transmission log holds about one entry per segment, not one per resend."""
        s = make_session()
        s.write(b"x" * MSS * 30)
        sent(s, 0.0)
        t = 0.0
        while t < 20.0:
            t = s.next_timer()
            s.handle_timer(t)
            sent(s, t)
        self.assertGreater(s.retransmissions, 30 * 100)
        self.assertLessEqual(len(s.sender._sent_log), 2 * 30)


class RttSampleTests(SynchronousTestCase):
    def test_reack_of_an_old_number_gives_no_sample(self) -> None:
        s = make_session()
        s.write(b"x" * MSS * 2)
        sent(s, 0.0)
        ack(s, [0], 0, 0.030)
        self.assertEqual(s.srtt, 30)
        s.write(b"y" * MSS)
        sent(s, 0.100)
        # acknowledges 1 (sent at 0) echoing 0, at 0.200: a late re-ack, and 2 (sent at
        # 100) is not in it: the echo matches 1, sample 200
        ack(s, [1], 0, 0.200)
        self.assertGreater(s.srtt, 30)
        srtt = s.srtt
        # an ACK that acknowledges nothing new gives no sample
        ack(s, [1], 0, 0.300)
        self.assertEqual(s.srtt, srtt)

    def test_ack_of_an_earlier_transmission_gives_no_sample(self) -> None:
        s = make_session()
        s.write(b"x" * MSS * 2)
        sent(s, 0.0)
        ack(s, [1], 0, 0.030)
        srtt = s.srtt
        s.handle_timer(0.031)
        self.assertEqual(data_numbers(sent(s, 0.031)), [0, 0])
        # the original of 0 arrives after all (echo 0, but 0 was last sent at 31)
        ack(s, [0], 0, 0.045)
        self.assertEqual(s.srtt, srtt)
        self.assertEqual(s.sender.spurious_resends, 1)


class ReorderingTests(SynchronousTestCase):
    def test_spurious_resends_widen_the_allowance(self) -> None:
        s = make_session()
        t = 0.0
        self.assertEqual(s.sender.reorder_steps, 0)
        for i in range(4):
            base = 2 * i
            s.write(b"x" * MSS * 2)
            sent(s, t)
            ms = int(round(t * 1000))
            ack(s, [base + 1], ms, t + 0.030, rcv_nxt=base)
            self.assertEqual(data_numbers(sent(s, t + 0.030)), [])
            t2, numbers = next_data(s)
            self.assertEqual(numbers, [base, base])
            # the original arrives late: the resend was spurious
            ack(s, [base], ms, t2 + 0.005, rcv_nxt=base + 2)
            t = t2 + 0.010
        self.assertEqual(s.sender.spurious_resends, 4)
        self.assertGreaterEqual(s.sender.reorder_steps, 1)
        # the allowance now holds resends back for a quarter srtt per step
        s.write(b"x" * MSS * 2)
        sent(s, t)
        ms = int(round(t * 1000))
        ack(s, [9], ms, t + 0.030, rcv_nxt=8)
        sent(s, t + 0.030)
        allowance = s.sender.reorder_steps * s.srtt // 4
        self.assertGreaterEqual(allowance, 10)
        self.assertEqual(s.sender.loss_check_at, int(round((t + 0.030) * 1000)) + allowance)

    def test_ack_losses_alone_do_not_widen_it(self) -> None:
        """A spurious resend now and then (the ACKs of an original lost) keeps the 1 ms
        allowance: only one in about eight is."""
        s = make_session()
        t = 0.0
        n = 0
        for i in range(20):
            s.write(b"x" * MSS * 2)
            sent(s, t)
            ms = int(round(t * 1000))
            ack(s, [n + 1], ms, t + 0.030, rcv_nxt=n)
            self.assertEqual(data_numbers(sent(s, t + 0.030)), [])
            t2, numbers = next_data(s)
            self.assertEqual(numbers, [n, n])
            # every tenth resend turns out spurious, the others are acknowledged as resends
            ts = ms if i % 10 == 0 else int(round(t2 * 1000))
            ack(s, [n], ts, t2 + 0.040, rcv_nxt=n + 2)
            n += 2
            t = t2 + 0.050
        self.assertEqual(s.sender.spurious_resends, 2)
        self.assertEqual(s.sender.reorder_steps, 0)


class EagerAckTests(SynchronousTestCase):
    def test_eager_ack_repeats_the_previous_numbers(self) -> None:
        s = make_session()
        s.receive_segments([DataSegment(CONV, 0, 5, 1, 0, b"a")], 0.010)
        acks = [x for x in sent(s, 0.010) if isinstance(x, AckSegment)]
        self.assertEqual([list(a.numbers) for a in acks], [[1]])
        s.receive_segments([DataSegment(CONV, 0, 6, 2, 0, b"b")], 0.011)
        acks = [x for x in sent(s, 0.011) if isinstance(x, AckSegment)]
        self.assertEqual([list(a.numbers) for a in acks], [[2, 1]])
        self.assertEqual(acks[0].timestamp, 6, "the echo is the newest due number's")
        # numbers the peer's una passed are not repeated
        s.receive_segments([CmdSegment(CONV, CMD_PING, 0, 3, 0, 100),
                            DataSegment(CONV, 0, 7, 3, 3, b"c")], 0.012)
        acks = [x for x in sent(s, 0.012) if isinstance(x, AckSegment)]
        self.assertEqual([list(a.numbers) for a in acks], [[3]])


def _bulk(loss: float, jitter: float, seed: int, size: int = 2_000_000,
          **cfg) -> SimulatedPair:
    a, b = make_session(**cfg), make_session(**cfg)
    prof = LinkProfile(loss=loss, delay=0.02, jitter=jitter)
    pair = SimulatedPair(a, b, prof, LinkProfile(loss=loss, delay=0.02, jitter=jitter),
                         seed=seed)
    data = random.Random(seed).randbytes(size)
    state = {"off": 0}

    def done() -> bool:
        while state["off"] < size and not a.send_buffer_full:
            a.write(data[state["off"]:state["off"] + 65536])
            state["off"] += 65536
        pair.pump(a)
        return len(pair.received[id(b)]) >= size

    assert pair.run_until(done, 60), "transfer did not finish"
    assert bytes(pair.received[id(b)]) == data
    return pair


class SimulatedLossTests(SynchronousTestCase):
    def test_five_percent_loss_recovers_without_timeouts(self) -> None:
        """2 MB at 5 % loss each way, 20 ms one-way, V2Ray's default windows: every loss
        is resent by order, none waits for a timeout, and the transfer takes about two
        round trips per receive window (V2Ray's policy: ~0.27 s here; bound 0.23 s)."""
        for seed in (1, 2, 3):
            pair = _bulk(0.05, 0.0, seed)
            a = pair.a
            self.assertGreater(pair.stats["a->b"].dropped, 50)
            self.assertEqual(a.retransmissions, a.sender.fast_retransmissions,
                             f"seed {seed}: a resend waited for a timeout")
            self.assertLess(pair.now, 0.23, f"seed {seed}")

    def test_reordering_link_resends_little(self) -> None:
        """15 ms of jitter on 20 ms (heavy reordering), no loss: the allowance widens, and
        fewer than 4 % of the segments are resent."""
        pair = _bulk(0.0, 0.015, 4)
        a = pair.a
        self.assertGreater(a.sender.reorder_steps, 0)
        self.assertLess(a.retransmissions, 0.04 * a.segments_sent)

    def test_read_buffer_window_shortens_a_transfer_at_five_percent_loss(self) -> None:
        """V2Ray's window (776 segments: readBufferSize 1 MiB) against the 2 MiB default's
        1553, 4 MB: a hole at the window's head holds it about two round trips either way,
        so the larger window moves about twice the data per hole (0.53-0.65 of the time
        over six seeds)."""
        small = _bulk(0.05, 0.0, 5, 4_000_000, read_buffer_bytes=1024 * 1024)
        large = _bulk(0.05, 0.0, 5, 4_000_000)
        self.assertEqual(small.b.rcv_wnd, 776)
        self.assertEqual(large.b.rcv_wnd, 1553)
        self.assertLess(large.now, 0.75 * small.now)


_EVENTS = st.lists(st.tuples(
    st.sampled_from(["write", "ack", "ack", "ping", "wait"]),
    st.integers(0, 40),          # numbers: around what was sent
    st.integers(-50, 5000),      # time stamp: past, now, our future
    st.integers(0, 80),          # ms to wait
    st.integers(0, 6)),          # the ACK's cumulative receiving_next
    min_size=1, max_size=60)


class AdversarialAckTests(SynchronousTestCase):
    @settings(max_examples=150)
    @given(_EVENTS)
    def test_any_acks_keep_the_sender_sane(self, events) -> None:
        """Whatever a peer acknowledges, echoes or advertises: no error, a timer always
        ahead of the clock after a flush (never a busy loop), resends within the window,
        and a transmission log of at most two entries per segment (none once all are
        acknowledged)."""
        s = make_session()
        now = 0.0
        for kind, n, ts, dt, cum in events:
            ms = int(round(now * 1000))
            if kind == "write":
                s.write(b"w" * (1 + n * 700))
            elif kind == "ack":
                echo = max(0, ms - ts) if ts < 4000 else ts
                s.receive_segments([AckSegment(CONV, 0, n + ts % 64, cum, echo,
                                               [n, (n * 7) % 41, max(0, n - 1)])], now)
            elif kind == "ping":
                s.receive_segments([CmdSegment(CONV, CMD_PING, 0, n, n // 2, 1 + ts % 300)],
                                   now)
            else:
                now += dt / 1000
                t = s.next_timer()
                while t is not None and t <= now:
                    s.handle_timer(t)
                    for seg in sent(s, t):
                        if isinstance(seg, DataSegment):
                            self.assertLess((seg.number - s.sender.una) & 0xFFFFFFFF,
                                            max(s.sender.remote_wnd_end - s.sender.una, 1)
                                            + s.send_queue_segments + 1)
                    nt = s.next_timer()
                    self.assertTrue(nt is None or nt > t, (t, nt))
                    t = nt
            sent(s, now)
            nt = s.next_timer()
            self.assertTrue(nt is None or nt > now, (now, nt))
            # stale entries wait behind a live one until it is acknowledged or resent
            self.assertLessEqual(len(s.sender._sent_log), 2 * s.sender.snd_nxt)
            if not s.sender.window:
                self.assertEqual(len(s.sender._sent_log), 0)
