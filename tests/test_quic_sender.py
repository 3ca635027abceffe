"""The QUIC adapter's per-datagram costs: bursts sent with UDP GSO (the peer must see
exactly the datagrams separate sends would give), the fallback where GSO is refused, and a
stream's data events of one turn handed to its protocol as one piece."""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

from aioquic.quic import events
from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from vtwist.testing.doubles import Recorder
from vtwist.transport.quic.connection import QuicSession
from vtwist.transport.quic.packet import PacketCodec
from vtwist.transport.quic.sender import MAX_SEGMENTS, DatagramWriter
from vtwist.transport.quic.settings import QUICSettings


def _pair(test: SynchronousTestCase) -> tuple[socket.socket, socket.socket, Any]:
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    inp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (out, inp):
        test.addCleanup(s.close)
    inp.bind(("127.0.0.1", 0))
    inp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    inp.settimeout(5)
    return out, inp, inp.getsockname()


def _receive(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65536) for _ in range(count)]


class DatagramWriterTests(SynchronousTestCase):
    def test_burst_arrives_as_the_same_datagrams(self) -> None:
        """Equal-sized runs (longer than one GSO send), a short one closing a run, runs to
        two addresses: each datagram arrives whole, in order."""
        out, inp, addr = _pair(self)
        _, other, addr2 = _pair(self)
        burst = [(bytes([i % 251]) * 1400, addr) for i in range(MAX_SEGMENTS + 10)]
        burst += [(b"short", addr), (b"x" * 1400, addr2), (b"y" * 1400, addr2),
                  (b"z" * 900, addr), (b"w" * 1200, addr)]
        writer = DatagramWriter(out)
        self.assertEqual(writer.many(burst), 0)
        self.assertEqual(_receive(inp, len(burst) - 2),
                         [data for data, to in burst if to == addr])
        self.assertEqual(_receive(other, 2), [b"x" * 1400, b"y" * 1400])
        self.assertEqual(writer.gso, sys.platform.startswith("linux"))

    def test_refused_gso_falls_back_for_good(self) -> None:
        """A kernel or route without UDP GSO (EIO, EINVAL ...): one sendto per datagram,
        now and from then on."""
        out, inp, addr = _pair(self)
        calls: list[str] = []

        class NoGso:
            def sendto(self, data: bytes, to: Any) -> int:
                calls.append("sendto")
                return out.sendto(data, to)

            def sendmsg(self, *args: Any) -> int:
                calls.append("sendmsg")
                raise OSError(errno.EIO, "no GSO")

        writer = DatagramWriter(NoGso(), gso=True)  # type: ignore[arg-type]
        burst = [(b"%d" % i * 100, addr) for i in range(3)]
        self.assertEqual(writer.many(burst), 0)
        self.assertFalse(writer.gso)
        self.assertEqual(writer.many([(b"a", addr), (b"b", addr)]), 0)
        self.assertEqual(calls, ["sendmsg"] + ["sendto"] * 5)
        self.assertEqual(_receive(inp, 5), [d for d, _ in burst] + [b"a", b"b"])

    def test_full_buffer_drops_the_run(self) -> None:
        """Any other error drops the run (QUIC retransmits); GSO stays on."""

        class Full:
            def sendto(self, data: bytes, to: Any) -> int:
                raise BlockingIOError(errno.EAGAIN, "full")

            def sendmsg(self, *args: Any) -> int:
                raise BlockingIOError(errno.EAGAIN, "full")

        writer = DatagramWriter(Full(), gso=True)  # type: ignore[arg-type]
        addr = ("127.0.0.1", 9)
        self.assertEqual(writer.many([(b"a" * 10, addr)] * 4 + [(b"b", ("127.0.0.2", 9))]), 5)
        self.assertTrue(writer.gso)


class FakeQuic:
    """Just what QuicSession.pump touches, with scripted events."""

    def __init__(self, scripted: list[Any]) -> None:
        self.scripted = scripted
        self.consumed: dict[int, int] = {}
        self.configuration = type("C", (), {"is_client": False})()

    def next_event(self) -> Any:
        return self.scripted.pop(0) if self.scripted else None

    def datagrams_to_send(self, now: float) -> list[Any]:
        return []

    def get_timer(self) -> None:
        return None

    def send_backlog(self, stream_id: int) -> int:
        return 0

    def has_stream(self, stream_id: int) -> bool:
        return True

    def stop_stream(self, stream_id: int, code: int) -> None:
        pass

    def reset_stream(self, stream_id: int, code: int) -> None:
        pass


class GatheredDeliveryTests(SynchronousTestCase):
    def test_one_piece_per_stream_and_turn_in_order(self) -> None:
        """Three data events of stream 0 reach its protocol as one dataReceived; a reset of
        stream 4 comes after stream 4's earlier data, which is delivered first."""
        protos: dict[int, Recorder] = {}

        def on_stream(session: QuicSession, stream_id: int) -> Recorder:
            protos[stream_id] = Recorder()
            return protos[stream_id]

        quic = FakeQuic([
            events.StreamDataReceived(data=b"a", end_stream=False, stream_id=0),
            events.StreamDataReceived(data=b"x", end_stream=False, stream_id=4),
            events.StreamDataReceived(data=b"b", end_stream=False, stream_id=0),
            events.StreamDataReceived(data=b"c", end_stream=False, stream_id=0),
            events.StreamReset(error_code=0, stream_id=4),
            events.StreamDataReceived(data=b"d", end_stream=False, stream_id=0),
        ])
        session = QuicSession(task.Clock(), quic, PacketCodec(QUICSettings()),  # type: ignore[arg-type]
                              lambda d, a: None, None, None, on_stream=on_stream)
        session.pump()
        self.assertEqual(bytes(protos[0].data), b"abcd")
        self.assertEqual(bytes(protos[4].data), b"x")
        self.assertIsNotNone(protos[4].lost)
        self.assertIsNone(protos[0].lost)

    def test_joined_pieces(self) -> None:
        """Consecutive data of one stream is one call (one VMess/relay pass per turn)."""
        received: list[bytes] = []

        class Counting(Recorder):
            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        quic = FakeQuic([events.StreamDataReceived(data=bytes([65 + i]) * 3, end_stream=i == 4,
                                                   stream_id=0) for i in range(5)])
        session = QuicSession(task.Clock(), quic, PacketCodec(QUICSettings()),  # type: ignore[arg-type]
                              lambda d, a: None, None, None,
                              on_stream=lambda s, i: Counting())
        session.pump()
        self.assertEqual(received, [b"AAABBBCCCDDDEEE"])
        self.assertTrue(session.streams[0].finReceived)
