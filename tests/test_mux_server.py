"""The Mux.Cool server over fake transports: dispatch through the tunnel service, End and
End+Error, unknown ids, bad input (one log line, that connection only), flow control."""

from __future__ import annotations

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.mux import frame as F
from vtwist.proxy.mux.connection import END_DELAY, SESSION_BUFFER
from vtwist.proxy.mux.server import MuxServer
from vtwist.testing.doubles import HalfCloseTransport, log_lines
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.tunnel.relay import RelayProtocol

TARGET = Destination.tcp("example.com", 80)


class ServerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.tunnels = RecordingTunnels(self.clock)
        self.carrier = HalfCloseTransport(peer=("10.1.1.1", 5555))
        self.server = MuxServer(self.tunnels, self.carrier, source="10.1.1.1:5555")
        self.logs = log_lines(self, "vtwist.mux")

    def frames(self) -> list[F.Frame]:
        """What the server wrote on the carrier so far (at the end of the reactor turn, and
        a plain End after its wait for company)."""
        self.clock.advance(0)
        self.clock.advance(END_DELAY)
        out = F.FrameDecoder().feed(self.carrier.value())
        self.carrier.clear()
        return out

    def connect(self, index: int = 0) -> HalfCloseTransport:
        """Let connection attempt ``index`` succeed; the target's transport."""
        _, _, d = self.tunnels.connects[index]
        proto = RelayProtocol()
        target = HalfCloseTransport()
        proto.makeConnection(target)
        d.callback(proto)
        self.clock.advance(0)
        return target

    def test_new_with_data_then_keep_and_reply(self) -> None:
        self.server.received(F.encode_new(1, TARGET, b"GET /"))
        dest, kw, _ = self.tunnels.connects[0]
        self.assertEqual(dest, TARGET)
        target = self.connect()
        self.assertEqual(target.value(), b"GET /")
        self.server.received(b"".join(F.encode_keep(1, b" HTTP/1.1")))
        self.assertEqual(target.value(), b"GET / HTTP/1.1")
        stream = self.server.sessions.get(1)
        stream.protocol.tunnel.relay.received(1, b"x" * 20000)
        got = self.frames()
        self.assertEqual([len(f.data) for f in got], [8192, 8192, 3616])
        self.assertTrue(all(f.status == F.KEEP and f.session_id == 1 for f in got))

    def test_client_end_half_closes_target_then_target_end(self) -> None:
        self.server.received(F.encode_new(1, TARGET))
        target = self.connect()
        self.server.received(F.encode_end(1))
        self.assertTrue(target.writeClosed)
        relay = self.server.sessions.get(1).protocol.tunnel.relay
        relay.received(1, b"late reply")
        relay.eof(1)
        got = self.frames()
        self.assertEqual([(f.status, f.data) for f in got], [(F.KEEP, b"late reply"), (F.END, None)])
        self.assertNotIn(1, self.server.sessions)

    def test_new_for_a_live_id_replaces_it(self) -> None:
        """As 4.34 (mux.md 3.2): a New reusing a live id replaces that session silently
        (its target closes); later frames go to the new one, a TCP id that was a UDP
        session's included."""
        self.server.received(F.encode_new(1, TARGET))
        first = self.connect(0)
        old = self.server.sessions.get(1)
        self.server.received(F.encode_new(1, Destination.tcp("example.org", 81), b"again"))
        self.clock.advance(0)
        self.assertTrue(old.closed)
        self.assertTrue(first.disconnecting)
        second = self.connect(1)
        self.assertEqual(second.value(), b"again")
        self.server.received(b"".join(F.encode_keep(1, b"!")))
        self.assertEqual((first.value(), second.value()), (b"", b"again!"))
        self.server.received(F.encode_new(2, Destination.udp("8.8.8.8", 53), b"q"))
        self.assertIn(2, self.server.sessions.udp)
        self.server.received(F.encode_new(2, TARGET, b"tcp now"))
        self.assertNotIn(2, self.server.sessions.udp)
        self.assertEqual(self.connect(2).value(), b"tcp now")
        self.assertEqual(self.server.unended, 2)
        self.assertEqual(self.frames(), [])  # nothing to tell the client
        self.assertEqual(self.logs, [])

    def test_end_with_error_aborts(self) -> None:
        self.server.received(F.encode_new(1, TARGET))
        target = self.connect()
        self.server.received(F.encode_end(1, error=True))
        self.clock.advance(0)
        self.assertTrue(target.disconnecting)
        self.assertEqual(self.frames(), [])

    def test_connect_failure_is_end_with_error(self) -> None:
        self.server.received(F.encode_new(1, TARGET))
        self.tunnels.connects[0][2].errback(ConnectionRefusedError())
        (end,) = self.frames()
        self.assertEqual((end.status, end.error), (F.END, True))
        self.assertFalse(self.carrier.disconnecting)

    def test_unknown_ids_are_normal(self) -> None:
        """Keep after End is answered with End; End for unknown ids ignored (mux.md 3.5)."""
        self.server.received(F.encode_end(7, error=True))
        self.server.received(b"".join(F.encode_keep(9, b"stale")))
        self.server.received(F.encode_keepalive())
        (end,) = self.frames()
        self.assertEqual((end.session_id, end.status, end.error), (9, F.END, False))
        self.assertFalse(self.carrier.disconnecting)
        self.assertEqual(self.logs, [])

    def test_udp_session(self) -> None:
        self.server.received(F.encode_new(4, Destination.udp("8.8.8.8", 53), b"query"))
        (session,) = self.tunnels.sessions
        self.assertEqual(session.sent, [(b"query", Destination.udp("8.8.8.8", 53))])
        session.onPacket(b"answer", Destination.udp("8.8.8.8", 53))
        (keep,) = self.frames()
        self.assertEqual((keep.session_id, keep.data), (4, b"answer"))

    def test_xray_single_udp(self) -> None:
        """Xray's command-3 UDP: id 0, a global id, per-datagram addresses both ways."""
        self.server.received(F.encode_new(0, Destination.udp("8.8.8.8", 53), b"q1",
                                          b"\x01" * 8))
        self.server.received(b"".join(F.encode_keep(0, b"q2", Destination.udp("1.1.1.1", 53))))
        (session,) = self.tunnels.sessions
        self.assertEqual(session.sent, [(b"q1", Destination.udp("8.8.8.8", 53)),
                                        (b"q2", Destination.udp("1.1.1.1", 53))])
        session.onPacket(b"a2", Destination.udp("1.1.1.1", 53))
        (keep,) = self.frames()
        self.assertEqual((keep.data, keep.target), (b"a2", Destination.udp("1.1.1.1", 53)))

    def test_client_eof_ends_sessions_then_carrier(self) -> None:
        self.server.received(F.encode_new(1, TARGET))
        target = self.connect()
        self.server.eof()
        self.assertTrue(target.writeClosed)
        self.server.sessions.get(1).protocol.tunnel.relay.eof(1)
        self.assertTrue(self.carrier.disconnecting)

    def test_lost_ends_every_session(self) -> None:
        self.server.received(F.encode_new(1, TARGET) + F.encode_new(2, TARGET))
        t1, t2 = self.connect(0), self.connect(1)
        self.server.lost(None)
        self.clock.advance(0)
        self.assertTrue(t1.disconnecting and t2.disconnecting)


class BadInputTests(SynchronousTestCase):
    """Each bad input closes that carrier with one log line; another carrier is untouched."""

    CASES = {
        "metadata too long": b"\x02\x01" + b"\x00" * 513,
        "metadata too short": b"\x00\x02\x00\x01",
        "unknown status": b"\x00\x04\x00\x01\x09\x00",
        "unknown network": bytes.fromhex("000c00010100030050010102030a"),
        "address": bytes.fromhex("00080001010001005002"),
        "UDP datagram": F.encode_new(3, Destination.udp("1.2.3.4", 53), b"\x00" * 2049),
    }

    def test_each(self) -> None:
        for words, raw in self.CASES.items():
            clock = Clock()
            tunnels = RecordingTunnels(clock)
            bad_carrier, good_carrier = HalfCloseTransport(), HalfCloseTransport()
            bad = MuxServer(tunnels, bad_carrier)
            good = MuxServer(tunnels, good_carrier)
            logs = log_lines(self, "vtwist.mux")
            good.received(F.encode_new(1, TARGET))
            bad.received(F.encode_new(1, TARGET))
            bad.received(raw)
            self.assertTrue(bad_carrier.disconnecting, words)
            self.assertEqual(len(logs), 1, (words, logs))
            self.assertIn(words, logs[0])
            self.assertFalse(good_carrier.disconnecting, words)
            self.assertIn(1, good.sessions)
            self.assertTrue(bad.closed)

    def test_truncated_payload_at_eof(self) -> None:
        clock = Clock()
        carrier = HalfCloseTransport()
        server = MuxServer(RecordingTunnels(clock), carrier)
        logs = log_lines(self, "vtwist.mux")
        server.received(b"".join(F.encode_keep(1, b"x" * 100))[:40])
        server.eof()
        self.assertTrue(carrier.disconnecting)
        self.assertEqual(len(logs), 1)
        self.assertIn("inside a frame", logs[0])


class FlowControlTests(SynchronousTestCase):
    """A session whose target is full stops the carrier past its bound; drain resumes."""

    def test_pause_and_resume(self) -> None:
        clock = Clock()
        tunnels = RecordingTunnels(clock)
        carrier = HalfCloseTransport()
        server = MuxServer(tunnels, carrier)
        server.received(F.encode_new(1, TARGET) + F.encode_new(2, TARGET))
        _, _, d = tunnels.connects[0]
        proto = RelayProtocol()
        proto.makeConnection(HalfCloseTransport())
        d.callback(proto)
        stream = server.sessions.get(1)
        stream.pauseProducing()  # the target's buffer is full
        chunk = b"".join(F.split_stream(1, b"y" * 65536))
        for _ in range(SESSION_BUFFER // 65536):
            server.received(chunk)
            self.assertEqual(carrier.producerState, "producing")
        server.received(chunk)
        self.assertEqual(carrier.producerState, "paused")
        stream.resumeProducing()
        self.assertEqual(carrier.producerState, "producing")

    def test_connecting_session_does_not_stall_others_below_bound(self) -> None:
        """Session 2 still connects (its tunnel holds its bytes, paused): a little data for
        it does not stop the carrier."""
        clock = Clock()
        tunnels = RecordingTunnels(clock)
        carrier = HalfCloseTransport()
        server = MuxServer(tunnels, carrier)
        server.received(F.encode_new(2, TARGET, b"early"))
        server.received(b"".join(F.split_stream(2, b"z" * 30000)))
        self.assertEqual(carrier.producerState, "producing")

    def test_carrier_full_pauses_every_target(self) -> None:
        clock = Clock()
        tunnels = RecordingTunnels(clock)
        carrier = HalfCloseTransport()
        server = MuxServer(tunnels, carrier)
        server.received(F.encode_new(1, TARGET) + F.encode_new(2, TARGET))
        targets = []
        for i in range(2):
            proto = RelayProtocol()
            t = HalfCloseTransport()
            proto.makeConnection(t)
            tunnels.connects[i][2].callback(proto)
            targets.append(t)
        carrier.producer.pauseProducing()
        self.assertEqual([t.producerState for t in targets], ["paused", "paused"])
        carrier.producer.resumeProducing()
        self.assertEqual([t.producerState for t in targets], ["producing", "producing"])
