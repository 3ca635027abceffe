"""Tests for the sans-IO mKCP session (ARQ, timers, states) over a simulated link."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from vtwist.testing.kcplink import LinkProfile, SimulatedPair
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.crypt import make_authenticator
from vtwist.transport.kcp.obfs import make_header
from vtwist.transport.kcp.segment import (
    CMD_PING,
    CMD_TERMINATE,
    OPTION_CLOSE,
    AckSegment,
    CmdSegment,
    DataSegment,
    parse_segments,
)
from vtwist.transport.kcp.session import Packer, Session, State

_HERE = Path(__file__).resolve().parent
V = json.loads((_HERE / "vectors" / "mkcp-vectors.json").read_text())


def make_session(conv: int = 0x1234, now: float = 0.0, **kw) -> Session:
    header = kw.pop("header", "none")
    seed = kw.pop("seed", None)
    cfg = KCPConfig(header_type=header, seed=seed, **kw)
    return Session(conv, cfg, Packer(make_header(header), make_authenticator(seed)), now)


def segments_of(session: Session, datagrams: list[bytes]) -> list:
    out = []
    for d in datagrams:
        plain = session.packer.unpack(d)
        assert plain is not None
        out.extend(parse_segments(plain))
    return out


def feed(session: Session, segs: list, now: float) -> None:
    session.receive_segments(segs, now)


class RTOTests(SynchronousTestCase):
    def test_traces(self) -> None:
        for trace in V["rto_traces"]:
            s = make_session(tti=trace["tti_minRtt"])
            self.assertEqual(s.rto, trace["initial"]["rto"])
            for i, step in enumerate(trace["steps"]):
                s.rtt.update(step["rtt_sample"], 1000 * i)
                self.assertEqual((s.rto, s.srtt, s.rttvar),
                                 (step["rto"], step["srtt"], step["variation"]), step)

    def test_peer_rto_adopted_after_3s(self) -> None:
        s = make_session()
        s.rtt.update(20, 0)
        rto = s.rto
        feed(s, [CmdSegment(0x1234, CMD_PING, 0, 0, 0, 999)], 1.0)
        self.assertEqual(s.rto, rto)
        feed(s, [CmdSegment(0x1234, CMD_PING, 0, 0, 0, 999)], 3.5)
        self.assertEqual(s.rto, 999)
        feed(s, [CmdSegment(0x1234, CMD_PING, 0, 0, 0, 0)], 7.0)
        self.assertEqual(s.rto, 50, "peer_rto 0 is floored at tti")


class SenderTests(SynchronousTestCase):
    def test_write_sends_at_once(self) -> None:
        s = make_session(header="dtls")
        s.write(b"x" * 3000)
        segs = segments_of(s, s.datagrams_to_send(0.001))
        data = [x for x in segs if isinstance(x, DataSegment)]
        self.assertEqual([x.number for x in data], [0, 1, 2])
        self.assertEqual([len(x.payload) for x in data], [1313, 1313, 374])
        self.assertEqual(data[0].timestamp, 1)

    def test_full_segment_is_mtu(self) -> None:
        for seed, extra in ((None, 0), ("", 12)):
            s = make_session(header="dtls", seed=seed)
            s.write(b"y" * 5000)
            sizes = [len(d) for d in s.datagrams_to_send(0.0)]
            self.assertEqual(max(sizes), 1350 + extra)

    def test_small_writes_coalesce_before_sending(self) -> None:
        s = make_session()
        for _ in range(10):
            s.write(b"ab")
        data = [x for x in segments_of(s, s.datagrams_to_send(0.0))
                if isinstance(x, DataSegment)]
        self.assertEqual(len(data), 1)
        self.assertEqual(data[0].payload, b"ab" * 10)

    def test_remote_window_limits_first_transmissions(self) -> None:
        s = make_session()
        s.write(b"z" * 1326 * 100)
        data = [x for x in segments_of(s, s.datagrams_to_send(0.0))
                if isinstance(x, DataSegment)]
        self.assertEqual(len(data), 32, "initial remote window is 32")
        feed(s, [AckSegment(0x1234, 0, 50, 0, 0, [0, 1])], 0.01)
        data = [x for x in segments_of(s, s.datagrams_to_send(0.01))
                if isinstance(x, DataSegment)]
        self.assertEqual([x.number for x in data], list(range(32, 50)))
        self.assertEqual(s.una, 2)

    def test_ack_removes_and_ping_when_empty(self) -> None:
        s = make_session()
        s.write(b"q" * 10)
        s.datagrams_to_send(0.0)
        feed(s, [AckSegment(0x1234, 0, 776, 0, 0, [0])], 0.02)
        segs = segments_of(s, s.datagrams_to_send(0.02))
        self.assertEqual(s.una, 1)
        self.assertTrue(any(isinstance(x, CmdSegment) and x.cmd == CMD_PING
                            and x.sending_next == 1 for x in segs))

    def test_retransmit_on_timer_and_rtt(self) -> None:
        s = make_session()
        s.write(b"r" * 2000)
        s.datagrams_to_send(0.0)
        t = 0.0
        retrans = []
        while t < 0.3:
            t = s.next_timer()
            s.handle_timer(t)
            retrans += [x for x in segments_of(s, s.datagrams_to_send(t))
                        if isinstance(x, DataSegment)]
        self.assertTrue(retrans)
        self.assertGreaterEqual(retrans[0].timestamp, 100)
        # ack with echoed timestamp 0 at t=0.03: rtt sample 30 ms on the largest number
        s2 = make_session()
        s2.write(b"r" * 2000)
        s2.datagrams_to_send(0.0)
        feed(s2, [AckSegment(0x1234, 0, 776, 0, 0, [1])], 0.03)
        self.assertEqual(s2.srtt, 30)

    def test_ack_of_number_zero_gives_rtt_sample(self) -> None:
        # V2Ray takes no sample when the largest acked number is 0; vtwist samples any
        # ACK echoing the send time of a segment it newly acknowledges
        s = make_session()
        s.write(b"a")
        s.datagrams_to_send(0.0)
        feed(s, [AckSegment(0x1234, 0, 776, 0, 0, [0])], 0.03)
        self.assertEqual(s.srtt, 30)

    def test_receiving_next_clears_window(self) -> None:
        s = make_session()
        s.write(b"g" * 1326 * 3)
        s.datagrams_to_send(0.0)
        feed(s, [CmdSegment(0x1234, CMD_PING, 0, 0, 2, 100)], 0.01)
        self.assertEqual(s.una, 2)
        self.assertEqual(s.send_queue_segments, 1)


class ReceiverTests(SynchronousTestCase):
    def test_first_ack_immediate(self) -> None:
        s = make_session()
        feed(s, [DataSegment(0x1234, 0, 777, 0, 0, b"hello")], 0.0)
        self.assertEqual(s.read(), [b"hello"])
        acks = [x for x in segments_of(s, s.datagrams_to_send(0.0))
                if isinstance(x, AckSegment)]
        self.assertEqual(len(acks), 1)
        self.assertEqual(list(acks[0].numbers), [0])
        self.assertEqual(acks[0].timestamp, 777)
        self.assertEqual(acks[0].receiving_next, 1)
        # V2Ray advertises 1 + 776 (capacity x tti); vtwist the 2 MiB readBufferSize
        self.assertEqual(acks[0].receiving_window, 1 + 1553)
        s = make_session(read_buffer_bytes=1024 * 1024)
        feed(s, [DataSegment(0x1234, 0, 777, 0, 0, b"hello")], 0.0)
        s.read()
        acks = [x for x in segments_of(s, s.datagrams_to_send(0.0))
                if isinstance(x, AckSegment)]
        self.assertEqual(acks[0].receiving_window, 777, "V2Ray's window when that is more")

    def test_reack_until_una_passes(self) -> None:
        s = make_session()
        feed(s, [DataSegment(0x1234, 0, 5, 0, 0, b"x")], 0.0)
        s.read()
        s.datagrams_to_send(0.0)
        acks = []
        t = 0.0
        while t < 0.2:
            t = s.next_timer()
            s.handle_timer(t)
            acks += [x for x in segments_of(s, s.datagrams_to_send(t))
                     if isinstance(x, AckSegment) and x.numbers]
        self.assertGreaterEqual(len(acks), 2)
        feed(s, [CmdSegment(0x1234, CMD_PING, 0, 1, 0, 100)], 0.25)
        self.assertEqual(s.receiver.acks, {})

    def test_out_of_window_dropped_without_ack(self) -> None:
        s = make_session(downlink_capacity=0, read_buffer_bytes=0)  # window 8
        feed(s, [DataSegment(0x1234, 0, 5, 8, 0, b"x")], 0.0)
        self.assertEqual(s.dropped_out_of_window, 1)
        self.assertEqual(s.datagrams_to_send(0.0), [])

    def test_window_advances_only_when_read(self) -> None:
        s = make_session(downlink_capacity=0, read_buffer_bytes=0)
        for n in range(8):
            feed(s, [DataSegment(0x1234, 0, 5, n, 0, b"x")], 0.0)
        feed(s, [DataSegment(0x1234, 0, 5, 8, 0, b"x")], 0.0)
        self.assertEqual(s.dropped_out_of_window, 1)
        self.assertEqual(len(s.read()), 8)
        feed(s, [DataSegment(0x1234, 0, 5, 8, 0, b"x")], 0.0)
        self.assertEqual(s.read(), [b"x"])

    def test_other_conv_stops_processing(self) -> None:
        s = make_session()
        feed(s, [DataSegment(0x1234, 0, 5, 0, 0, b"a"),
                 DataSegment(0x9999, 0, 5, 1, 0, b"b"),
                 DataSegment(0x1234, 0, 5, 1, 0, b"c")], 0.0)
        self.assertEqual(s.read(), [b"a"])

    def test_auth_failure_counted(self) -> None:
        s = make_session(seed="k")
        self.assertFalse(s.receive_datagram(b"\x00" * 40, 0.0))
        self.assertEqual(s.packer.auth_failures, 1)


class StateTests(SynchronousTestCase):
    def test_terminate_transitions(self) -> None:
        term = CmdSegment(0x1234, CMD_TERMINATE, 0, 0, 0, 100)
        s = make_session()
        feed(s, [term], 0.0)
        self.assertEqual(s.state, State.PEER_TERMINATING)
        s.close(0.0)
        self.assertEqual(s.state, State.TERMINATED)
        s = make_session()
        s.close(0.0)
        self.assertEqual(s.state, State.READY_TO_CLOSE)
        feed(s, [term], 0.0)
        self.assertEqual(s.state, State.TERMINATING)
        feed(s, [term], 0.0)
        self.assertEqual(s.state, State.TERMINATED)

    def test_close_option(self) -> None:
        s = make_session()
        s.write(b"abc")
        feed(s, [CmdSegment(0x1234, CMD_PING, OPTION_CLOSE, 0, 0, 100)], 0.0)
        self.assertEqual(s.state, State.PEER_CLOSED)
        self.assertFalse(s.write(b"more"))
        self.assertEqual(s.send_queue_segments, 0)

    def test_ready_to_close_sets_close_bit_then_terminates(self) -> None:
        s = make_session()
        s.write(b"abc")
        s.datagrams_to_send(0.0)
        s.close(0.001)
        t = 0.001
        segs = []
        while t < 0.3:
            t = s.next_timer()
            s.handle_timer(t)
            segs += segments_of(s, s.datagrams_to_send(t))
        self.assertTrue(segs)
        self.assertTrue(all(x.option == OPTION_CLOSE for x in segs))
        feed(s, [AckSegment(0x1234, 0, 776, 0, 0, [0])], t)
        segs = segments_of(s, s.datagrams_to_send(t))
        self.assertEqual(s.state, State.TERMINATING)
        self.assertEqual([(x.cmd, x.option) for x in segs], [(CMD_TERMINATE, 0)])

    def test_idle_timeout_to_terminated(self) -> None:
        s = make_session()
        t = 0.0
        seen = []
        while s.state != State.TERMINATED and t < 100:
            t = s.next_timer()
            s.handle_timer(t)
            seen += [(round(t, 3), x.cmd) for x in segments_of(s, s.datagrams_to_send(t))]
        self.assertEqual(s.state, State.TERMINATED)
        self.assertTrue(s.timed_out)
        self.assertTrue(30 <= t <= 41, t)
        self.assertIn((5.0, CMD_PING), seen)
        self.assertIn(CMD_TERMINATE, [c for _, c in seen])
        self.assertIsNone(s.next_timer())

    def test_ready_to_close_gives_up_after_15s(self) -> None:
        s = make_session()
        s.write(b"never acked")
        s.datagrams_to_send(0.0)
        s.close(1.0)
        t = 1.0
        first_terminate = None
        while s.state != State.TERMINATED and t < 60:
            t = s.next_timer()
            s.handle_timer(t)
            segs = segments_of(s, s.datagrams_to_send(t))
            if first_terminate is None and any(x.cmd == CMD_TERMINATE for x in segs):
                first_terminate = t
        self.assertTrue(s.timed_out)
        self.assertEqual(s.state, State.TERMINATED)
        self.assertTrue(16.0 <= first_terminate <= 16.1, first_terminate)
        self.assertTrue(24.0 <= t <= 25.1, t)

    def test_peer_terminating_times_out(self) -> None:
        s = make_session()
        feed(s, [CmdSegment(0x1234, CMD_TERMINATE, 0, 0, 0, 100)], 0.0)
        t = 0.0
        while s.state != State.TERMINATED and t < 60:
            t = s.next_timer()
            s.handle_timer(t)
            s.datagrams_to_send(t)
        self.assertEqual(s.state, State.TERMINATED)
        self.assertLessEqual(t, 14.5)

    def test_abort_sends_one_terminate(self) -> None:
        s = make_session()
        s.write(b"pending")
        s.abort(0.5)
        segs = segments_of(s, s.datagrams_to_send(0.5))
        self.assertEqual([(x.cmd, x.option) for x in segs], [(CMD_TERMINATE, 0)])
        self.assertEqual(s.state, State.TERMINATED)
        self.assertIsNone(s.next_timer())
        s.abort(0.6)
        self.assertEqual(s.datagrams_to_send(0.6), [])

    def test_no_empty_data_segment(self) -> None:
        s = make_session()
        s.write(b"")
        self.assertEqual(s.datagrams_to_send(0.0), [])


def _pair(rng_seed: int, loss: float, dup: float, jitter: float, **cfg) -> SimulatedPair:
    a = make_session(conv=7, header="dtls", **cfg)
    b = make_session(conv=7, header="dtls", **cfg)
    prof = LinkProfile(loss=loss, delay=0.02, jitter=jitter, duplicate=dup)
    prof2 = LinkProfile(loss=loss, delay=0.02, jitter=jitter, duplicate=dup)
    return SimulatedPair(a, b, prof, prof2, seed=rng_seed)


def _transfer(test, pair: SimulatedPair, up: bytes, down: bytes, limit: float) -> None:
    a, b = pair.a, pair.b
    state = {"up": 0, "down": 0}

    def pump_writes() -> None:
        for s, key, data in ((a, "up", up), (b, "down", down)):
            while state[key] < len(data) and not s.send_buffer_full:
                s.write(data[state[key]:state[key] + 20000])
                state[key] += 20000
            pair.pump(s)

    def done() -> bool:
        pump_writes()
        return (len(pair.received[id(b)]) >= len(up)
                and len(pair.received[id(a)]) >= len(down))

    test.assertTrue(pair.run_until(done, limit), "transfer did not finish")
    test.assertEqual(hashlib.sha256(pair.received[id(b)]).digest(), hashlib.sha256(up).digest())
    test.assertEqual(hashlib.sha256(pair.received[id(a)]).digest(),
                     hashlib.sha256(down).digest())


def _close(test, pair: SimulatedPair) -> None:
    a, b = pair.a, pair.b
    a.close(pair.now)
    pair.pump(a)
    test.assertTrue(pair.run_until(lambda: b.read_closed, pair.now + 30))
    b.close(pair.now)
    pair.pump(b)
    test.assertTrue(pair.run_until(pair.both_terminated, pair.now + 30))
    test.assertIsNone(a.next_timer())
    test.assertIsNone(b.next_timer())


class SimulatedLinkTests(SynchronousTestCase):
    def test_clean_link(self) -> None:
        pair = _pair(1, 0.0, 0.0, 0.0)
        rng = random.Random(1)
        _transfer(self, pair, rng.randbytes(500_000), rng.randbytes(100_000), 30)
        self.assertEqual(pair.a.retransmissions, 0)
        _close(self, pair)

    def test_lossy_reordering_duplicating_links(self) -> None:
        for seed in (2, 3, 4):
            pair = _pair(seed, 0.1, 0.05, 0.015)
            rng = random.Random(seed)
            _transfer(self, pair, rng.randbytes(1_000_000), rng.randbytes(300_000), 120)
            st = pair.stats["a->b"]
            self.assertGreater(st.dropped, 0)
            self.assertGreater(st.duplicated, 0)
            _close(self, pair)

    def test_heavy_loss_seed_mode(self) -> None:
        pair = _pair(5, 0.3, 0.1, 0.03, seed="")
        rng = random.Random(5)
        _transfer(self, pair, rng.randbytes(200_000), rng.randbytes(50_000), 300)
        _close(self, pair)

    def test_congestion_on(self) -> None:
        pair = _pair(6, 0.05, 0.0, 0.01, congestion=True)
        rng = random.Random(6)
        _transfer(self, pair, rng.randbytes(300_000), b"", 120)
        _close(self, pair)

    def test_close_with_data_outstanding(self) -> None:
        pair = _pair(8, 0.1, 0.05, 0.01)
        a, b = pair.a, pair.b
        data = random.Random(8).randbytes(300_000)
        a.write(data)
        a.close(0.0)
        pair.pump(a)
        self.assertTrue(pair.run_until(lambda: b.read_closed and not b.has_data(), 60))
        self.assertEqual(bytes(pair.received[id(b)]), data)
        b.close(pair.now)
        pair.pump(b)
        self.assertTrue(pair.run_until(pair.both_terminated, pair.now + 30))

    def test_slow_reader_shrinks_window(self) -> None:
        pair = _pair(7, 0.0, 0.0, 0.0, downlink_capacity=1, read_buffer_bytes=0)
        a, b = pair.a, pair.b
        pair.read_enabled[id(b)] = False
        data = random.Random(7).randbytes(2_000_000)
        a.write(data)
        pair.pump(a)
        pair.run_until(lambda: False, 3.0)
        wnd = b.rcv_wnd
        self.assertEqual(len(b.receiver.buffer), wnd, "receiver holds exactly one window")
        self.assertLessEqual(a.una, wnd + 1)
        pair.read_enabled[id(b)] = True
        pair.pump(b)
        self.assertTrue(pair.run_until(lambda: len(pair.received[id(b)]) >= len(data), 60))
        self.assertEqual(bytes(pair.received[id(b)]), data)
