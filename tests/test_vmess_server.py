"""The VMess inbound in memory: relay, UDP, probes, replay, clock skew, memory."""

from __future__ import annotations

import os
import random
import tracemalloc
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.policy import LevelPolicy, Policy
from vtwist.proxy.vmess import header as H
from vtwist.proxy.vmess.handshake import ClientSession
from vtwist.proxy.vmess.server import ProbeGuard, VMessServerFactory, VMessServerState
from vtwist.proxy.vmess.users import Account
from vtwist.testing.doubles import HalfCloseTransport, log_lines
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.tunnel.relay import RelayProtocol

NOW = 1_700_000_000.0
POLICY = Policy({0: LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5)})


def _target() -> tuple[RelayProtocol, HalfCloseTransport]:
    p = RelayProtocol()
    t = HalfCloseTransport()
    p.makeConnection(t)
    return p, t


class ServerTestBase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.accounts = [Account(os.urandom(16), alter_id=a, email=f"user{i}@test")
                         for i, a in enumerate((0, 4))]
        self.guard = ProbeGuard(min_delay=2, max_delay=8, linger=10, max_held=100_000,
                                rng=random.Random(1))
        self.state = VMessServerState(self.accounts, guard=self.guard)
        self.tunnels = RecordingTunnels(self.clock)
        self.now = NOW
        self.factory = VMessServerFactory(self.state, self.tunnels, POLICY,
                                          tag="vmess-in", now=lambda: self.now)
        self.logs = log_lines(self, "vtwist")

    def connect(self) -> tuple[Any, HalfCloseTransport]:
        proto = self.factory.buildProtocol(None)
        t = HalfCloseTransport()
        proto.makeConnection(t)
        return proto, t

    def session(self, account: Account | None = None, dest: Destination | None = None,
                **kw: Any) -> ClientSession:
        return ClientSession(account or self.accounts[0],
                             dest or Destination.tcp("example.com", 443), **kw)


class RelayThroughServer(ServerTestBase):
    def test_tcp_round_trip(self) -> None:
        cs = self.session()
        enc = cs.body_encoder()
        proto, t = self.connect()
        proto.dataReceived(cs.request_header(NOW) + b"".join(enc.encode(b"GET / HTTP/1.0\r\n")))
        self.assertEqual(len(self.tunnels.connects), 1)
        dest, kw, d = self.tunnels.connects[0]
        self.assertEqual(dest, Destination.tcp("example.com", 443))
        self.assertEqual(kw["email"], "user0@test")
        self.assertEqual(kw["inbound_tag"], "vmess-in")
        self.assertEqual(t.value(), b"")  # nothing before the target answers
        out, target = _target()
        d.callback(out)
        self.assertEqual(target.value(), b"GET / HTTP/1.0\r\n")
        # the target answers: response header + chunk in one write
        out.dataReceived(b"HTTP/1.0 200 OK\r\n")
        got = cs.feed_response(t.value())
        self.assertIsNotNone(got)
        _, dec, rest = got
        self.assertEqual(b"".join(dec.feed(rest)), b"HTTP/1.0 200 OK\r\n")
        # client end-of-stream -> target half-closed; target EOF too -> both closed, at a
        # chunk boundary (a normal end for VMess clients)
        proto.dataReceived(b"".join(enc.end()))
        self.assertTrue(target.writeClosed)
        t.clear()
        out.readConnectionLost()
        self.assertEqual(dec.feed(t.value()), [])
        self.assertTrue(dec.at_boundary)
        self.assertTrue(t.disconnecting)
        self.assertTrue(target.disconnecting)

    def test_target_eof_sends_end_of_stream(self) -> None:
        cs = self.session()
        proto, t = self.connect()
        proto.dataReceived(cs.request_header(NOW))
        out, target = _target()
        self.tunnels.connects[0][2].callback(out)
        out.dataReceived(b"data")
        out.readConnectionLost()
        _, dec, rest = cs.feed_response(t.value())
        self.assertEqual(dec.feed(rest), [b"data"])
        self.assertTrue(dec.eof)
        self.assertFalse(t.disconnecting)  # the uplink may still flow

    def test_backpressure_passes_through(self) -> None:
        cs = self.session()
        proto, t = self.connect()
        proto.dataReceived(cs.request_header(NOW))
        out, target = _target()
        self.tunnels.connects[0][2].callback(out)
        # target transport's producer is the VMess connection, and vice versa
        self.assertIsNotNone(target.producer)
        target.producer.pauseProducing()
        self.assertEqual(t.producerState, "paused")
        self.assertIs(t.producer, target)

    def test_header_held_until_target_data_or_eof(self) -> None:
        cs = self.session()
        proto, t = self.connect()
        proto.dataReceived(cs.request_header(NOW))
        out, target = _target()
        self.tunnels.connects[0][2].callback(out)
        self.assertEqual(t.value(), b"")
        out.readConnectionLost()  # target EOF without data: header + end-of-stream
        _, dec, rest = cs.feed_response(t.value())
        self.assertEqual(dec.feed(rest), [])
        self.assertTrue(dec.eof)

    def test_corrupt_body_closes(self) -> None:
        cs = self.session()
        proto, t = self.connect()
        chunk = bytearray(b"".join(cs.body_encoder().encode(b"hello")))
        chunk[5] ^= 0x40
        proto.dataReceived(cs.request_header(NOW) + bytes(chunk))
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.value(), b"")

    def test_legacy_header_and_security(self) -> None:
        cs = self.session(self.accounts[1], aead=False, security=1)
        proto, t = self.connect()
        proto.dataReceived(cs.request_header(NOW) + b"".join(cs.body_encoder().encode(b"x")))
        out, target = _target()
        self.tunnels.connects[0][2].callback(out)
        self.assertEqual(target.value(), b"x")
        out.dataReceived(b"reply")
        _, dec, rest = cs.feed_response(t.value())
        self.assertEqual(b"".join(dec.feed(rest)), b"reply")

    def test_client_gone_while_connecting(self) -> None:
        """The pending connect is cancelled quietly: no 'failed' line, nothing written."""
        proto, t = self.connect()
        proto.dataReceived(self.session().request_header(NOW))
        d = self.tunnels.connects[0][2]
        proto.connectionLost(None)
        self.assertTrue(d.called)
        self.assertFalse(any("failed" in line for line in self.logs), self.logs)
        self.assertEqual(t.value(), b"")

    def test_udp(self) -> None:
        dest = Destination.udp("8.8.8.8", 53)
        cs = self.session(dest=dest, command=H.CMD_UDP)
        enc = cs.body_encoder()
        proto, t = self.connect()
        proto.dataReceived(cs.request_header(NOW) + b"".join(enc.encode(b"q1"))
                           + b"".join(enc.encode(b"q22")))
        session = self.tunnels.sessions[0]
        self.assertEqual(session.sent, [(b"q1", dest), (b"q22", dest)])
        session.onPacket(b"a1", dest)
        session.onPacket(b"a22", dest)
        _, dec, rest = cs.feed_response(t.value())
        self.assertEqual(dec.feed(rest), [b"a1", b"a22"])  # datagram boundaries kept
        proto.dataReceived(b"".join(enc.end()))
        self.clock.advance(6)
        self.assertTrue(session.closed)
        self.assertTrue(t.disconnecting)

    def test_disable_insecure_encryption(self) -> None:
        self.state.disable_insecure = True
        proto, t = self.connect()
        proto.dataReceived(self.session(security=5).request_header(NOW))
        self.assertEqual(self.tunnels.connects, [])
        self.assertTrue(any("insecure encryption" in line for line in self.logs))
        self.clock.advance(30)
        self.assertEqual(t.value(), b"")
        self.assertTrue(t.writeClosed)


class Probes(ServerTestBase):
    """Bad headers are never answered and close after a bounded random delay."""

    def _finish(self, transports: list[HalfCloseTransport]) -> None:
        self.clock.advance(4)  # handshake deadline: no FIN before it, whatever the probe
        self.clock.advance(8)  # max probe delay: our FIN
        for t in transports:
            self.assertEqual(t.value(), b"")
            self.assertTrue(t.writeClosed or t.disconnecting)
        self.clock.advance(10)  # linger: closed even if the peer keeps sending
        for t in transports:
            self.assertTrue(t.disconnecting)
            self.assertEqual(t.value(), b"")

    def test_thousand_probes_never_answered(self) -> None:
        rng = random.Random(7)
        transports = []
        real_ok = 0
        for i in range(1000):
            proto, t = self.connect()
            transports.append(t)
            if i % 2:
                data = rng.randbytes(rng.choice([1, 15, 16, 17, 41, 60, 300, 2047, 2049, 9000]))
            else:
                cs = self.session(self.accounts[i % 4 // 2], aead=i % 4 == 0)
                header = bytearray(cs.request_header(NOW))
                for _ in range(rng.randint(1, 3)):
                    header[rng.randrange(len(header))] ^= rng.randint(1, 255)
                data = bytes(header) + rng.randbytes(rng.randint(0, 3000))
            pos = 0
            while pos < len(data):
                step = rng.randint(1, 500)
                proto.dataReceived(data[pos:pos + step])
                pos += step
            self.assertEqual(t.value(), b"")
            if i % 100 == 0:  # a real client, served in parallel, is unaffected
                cs = self.session()
                good, gt = self.connect()
                good.dataReceived(cs.request_header(NOW))
                out, target = _target()
                self.tunnels.connects[-1][2].callback(out)
                out.dataReceived(b"ok")
                _, dec, rest = cs.feed_response(gt.value())
                self.assertEqual(dec.feed(rest), [b"ok"])
                real_ok += 1
        self.assertEqual(real_ok, 10)
        self.assertEqual(len(self.tunnels.connects), 10)
        self._finish(transports)
        self.assertEqual(self.guard.held, 1000 - sum(
            1 for t in transports if t.disconnecting and not t.writeClosed))

    def test_probe_close_delay_is_bounded_and_random(self) -> None:
        delays = set()
        for _ in range(20):
            proto, t = self.connect()
            proto.dataReceived(os.urandom(100))
            start = self.clock.seconds()
            while not t.writeClosed:
                self.clock.advance(0.25)
            delays.add(self.clock.seconds() - start)
            # handshake deadline (4 s) + [2, 8] s, whenever the verdict came
            self.assertGreaterEqual(self.clock.seconds() - start, 6)
            self.assertLessEqual(self.clock.seconds() - start, 12.25)
        self.assertGreater(len(delays), 3)

    def test_probe_reads_until_peer_closes(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(os.urandom(5000))
        self.clock.advance(8)
        self.assertTrue(t.writeClosed)
        self.assertFalse(t.disconnecting)
        proto.dataReceived(os.urandom(5000))  # still read and discarded
        self.assertEqual(proto.discarded, 5000)
        proto.readConnectionLost()
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.value(), b"")

    def test_cap_on_held_probes(self) -> None:
        self.guard.max_held = 10
        held = []
        for _ in range(15):
            proto, t = self.connect()
            proto.dataReceived(os.urandom(64))
            held.append((proto, t))
        self.assertEqual(self.guard.held, 10)
        self.assertEqual(sum(t.disconnecting for _, t in held), 5)
        self.assertTrue(all(t.value() == b"" for _, t in held))
        for proto, t in held:
            if t.disconnecting:
                proto.connectionLost(None)
        self.assertEqual(self.guard.held, 10)
        for proto, _ in held[:10]:
            proto.connectionLost(None)
        self.assertEqual(self.guard.held, 0)

    def test_replay_refused_and_logged(self) -> None:
        wire = self.session().request_header(NOW)
        p1, t1 = self.connect()
        p1.dataReceived(wire)
        self.assertEqual(len(self.tunnels.connects), 1)
        p2, t2 = self.connect()
        p2.dataReceived(wire)
        self.assertEqual(len(self.tunnels.connects), 1)
        self.assertTrue(any("replayed AuthID for user user0@test" in line
                            for line in self.logs), self.logs)
        self._finish([t2])

    def test_clock_skew(self) -> None:
        for skew, ok in ((119, True), (-119, True), (125, False), (-125, False)):
            before = len(self.tunnels.connects)
            proto, t = self.connect()
            proto.dataReceived(self.session().request_header(NOW + skew))
            self.assertEqual(len(self.tunnels.connects) - before, int(ok), skew)
            if not ok:
                self.assertTrue(any(f"clock skew of {skew:+d} s for user user0@test" in line
                                    for line in self.logs), self.logs)
                self._finish([t])

    def test_unknown_user_logged(self) -> None:
        proto, t = self.connect()
        other = Account(os.urandom(16))
        proto.dataReceived(ClientSession(other, Destination.tcp("a.b", 1)).request_header(NOW))
        self.assertTrue(any("unknown user" in line for line in self.logs))
        self._finish([t])

    def test_global_padding_without_masking_does_not_crash(self) -> None:
        cs = self.session()
        object.__setattr__(cs, "option", 0x01 | 0x08)
        proto, t = self.connect()
        proto.dataReceived(cs.request_header(NOW))
        self.assertEqual(self.tunnels.connects, [])
        self._finish([t])


class ManyUsersAndMemory(ServerTestBase):
    def test_thousand_users_on_one_port(self) -> None:
        accounts = [Account(os.urandom(16), email=f"u{i}") for i in range(1000)]
        state = VMessServerState(accounts, legacy=False)
        factory = VMessServerFactory(state, self.tunnels, POLICY,
                                     now=lambda: NOW)
        for idx in (0, 1, 500, 999):
            proto = factory.buildProtocol(None)
            proto.makeConnection(HalfCloseTransport())
            proto.dataReceived(ClientSession(accounts[idx], Destination.tcp("x.y", 1))
                               .request_header(NOW))
            self.assertEqual(self.tunnels.connects[-1][1]["email"], f"u{idx}")

    def test_idle_connection_memory(self) -> None:
        """Memory held by an idle, relayed VMess connection (reported in the issue)."""
        n = 300
        sessions = [self.session() for _ in range(n)]
        headers = [cs.request_header(NOW) for cs in sessions]
        keep = []
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for wire in headers:
            proto, t = self.connect()
            proto.dataReceived(wire)
            out, target = _target()
            self.tunnels.connects[-1][2].callback(out)
            keep.append((proto, t, out, target))
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        per_conn = sum(s.size_diff for s in after.compare_to(before, "filename")) / n
        # Everything a relayed connection holds on our side, fake transports included.
        print(f"\nidle VMess connection: {per_conn / 1024:.1f} KiB (incl. test transports)")
        self.assertLess(per_conn, 48 * 1024)


class LegacyRefresh(ServerTestBase):
    def test_listening_factory_keeps_legacy_table_current(self) -> None:
        table = self.state.users.legacy_table
        self.factory.doStart()
        self.assertEqual(table._hi, int(NOW) + 120)
        self.now += 25
        self.clock.advance(10)
        self.assertEqual(table._hi, int(NOW) + 25 + 120)
        self.factory.doStop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_refresh_without_legacy(self) -> None:
        factory = VMessServerFactory(VMessServerState(self.accounts, legacy=False),
                                     self.tunnels, POLICY)
        factory.doStart()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        factory.doStop()


class Fuzz(ServerTestBase):
    """Any input, split anywhere, ending any way: no byte out, no exception, closed."""

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.binary(max_size=3000), cuts=st.lists(st.integers(1, 400), max_size=20),
           prefix_header=st.booleans(), ending=st.sampled_from(["fin", "lost", "none"]))
    def test_random_input(self, data, cuts, prefix_header, ending) -> None:
        if prefix_header:  # a valid header followed by garbage "body"
            data = self.session().request_header(self.now) + data
        proto, t = self.connect()
        pos = 0
        for cut in cuts + [len(data)]:
            proto.dataReceived(data[pos:pos + cut])
            pos += cut
            if pos >= len(data):
                break
        if ending == "fin":
            proto.readConnectionLost()
        elif ending == "lost":
            proto.connectionLost(None)
        for _ in range(60):
            self.clock.advance(0.5)
        if not prefix_header:
            self.assertEqual(t.value(), b"")
        if ending != "lost":
            self.assertTrue(t.disconnecting or t.writeClosed or self.tunnels.connects,
                            (len(data), cuts, prefix_header, ending, proto.phase))
        for _, _, d in self.tunnels.connects:
            if not d.called:
                d.cancel()
        self.tunnels.connects.clear()
