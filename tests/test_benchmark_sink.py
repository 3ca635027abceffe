"""The benchmarks' sink per connection: what it answers, and what it allocates."""

from __future__ import annotations

import socket

from twisted.trial import unittest

from benchmarks.loadgen import Target, transfer
from benchmarks.sink import SinkProtocol
from benchmarks.wire import pattern_chunks, pattern_digest, recv_exact, request


class FakeTransport:
    """Records writes; the sink asks it for nothing else on these paths."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def get_extra_info(self, name: str) -> None:
        return None

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def feed(protocol: SinkProtocol, data: bytes) -> None:
    """Deliver ``data`` the way asyncio does: into the buffer the protocol offers."""
    while data:
        buffer = protocol.get_buffer(len(data))
        n = min(len(buffer), len(data))
        buffer[:n] = data[:n]
        protocol.buffer_updated(n)
        data = data[n:]


def connected() -> tuple[SinkProtocol, FakeTransport]:
    protocol, transport = SinkProtocol(), FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


class SinkTests(unittest.TestCase):
    def test_connect_answers_one_byte_without_a_buffer_of_its_own(self) -> None:
        """A connection-rate request costs no per-connection 1 MiB buffer (it used to)."""
        protocol, transport = connected()
        feed(protocol, request(b"C"))
        self.assertEqual(transport.written, [b"K"])
        self.assertIsNone(protocol.echo_buffer)

    def test_echo_returns_bytes_that_came_with_and_after_the_header(self) -> None:
        protocol, transport = connected()
        feed(protocol, request(b"E") + b"first")
        feed(protocol, b"second")
        self.assertEqual(b"".join(transport.written), b"firstsecond")
        self.assertIsNotNone(protocol.echo_buffer)

    def test_upload_answers_the_digest(self) -> None:
        protocol, transport = connected()
        length = 300_000
        feed(protocol, request(b"U", length, verify=True))
        for piece in pattern_chunks(length, chunk=70_000):
            feed(protocol, bytes(piece))
        self.assertEqual(transport.written, [pattern_digest(length)])

    def test_bad_magic_closes(self) -> None:
        protocol, transport = connected()
        feed(protocol, b"XXXX" + request(b"C")[4:])
        self.assertTrue(transport.closed)
        self.assertEqual(transport.written, [])

    def test_unverified_upload_without_a_socket_is_read(self) -> None:
        """No socket to drop through (this fake transport): the bytes are read and
        counted as before, and the answer is 32 zero bytes."""
        protocol, transport = connected()
        feed(protocol, request(b"U", 200_000) + b"x" * 1000)
        feed(protocol, b"y" * 199_000)
        self.assertEqual(transport.written, [bytes(32)])


class SinkProcessTests(unittest.TestCase):
    """The real sink process (``python -m benchmarks.sink``) and the load generator."""

    def setUp(self) -> None:
        import subprocess
        import sys

        self.sink = subprocess.Popen([sys.executable, "-m", "benchmarks.sink"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(self._stop)
        assert self.sink.stdout is not None
        self.port = int(self.sink.stdout.readline())

    def _stop(self) -> None:
        assert self.sink.stdin is not None
        self.sink.stdin.close()
        self.sink.wait(10)
        self.sink.stdout.close()  # type: ignore[union-attr]

    def connect(self) -> socket.socket:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        self.addCleanup(s.close)
        return s

    def test_unverified_upload_is_dropped_and_answered(self) -> None:
        """An upload without the verify flag, header and bytes in odd pieces: the answer
        (32 zero bytes) comes after the last byte and not before; the connection then
        still answers (the transport reads again)."""
        s = self.connect()
        length = 20_000_000
        s.sendall(request(b"U", length) + b"a" * 10)
        sent = 10
        for piece in pattern_chunks(length - sent - 1, chunk=777_777):
            s.sendall(piece)
        s.settimeout(0.3)
        with self.assertRaises(socket.timeout):  # one byte still missing: no answer
            s.recv(1)
        s.settimeout(30)
        s.sendall(b"z")
        self.assertEqual(recv_exact(s, 32), bytes(32))

    def test_verified_upload_still_hashes(self) -> None:
        s = self.connect()
        length = 3_000_000
        s.sendall(request(b"U", length, verify=True))
        for piece in pattern_chunks(length):
            s.sendall(piece)
        self.assertEqual(recv_exact(s, 32), pattern_digest(length))

    def test_upload_cut_short_then_others_served(self) -> None:
        """A client that leaves mid-upload: the sink closes its side and serves on."""
        s = self.connect()
        s.sendall(request(b"U", 10_000_000) + b"x" * 100_000)
        s.close()
        t = self.connect()
        t.sendall(request(b"C"))
        self.assertEqual(recv_exact(t, 1), b"K")

    def test_load_generator_both_ways(self) -> None:
        """The load generator's unverified download (dropped by the kernel) and its
        verified one (hashed) both complete against the real sink."""
        target = Target(0, self.port, direct=True)
        self.assertGreater(transfer(target, "down", 8_000_000, 2), 0)
        self.assertGreater(transfer(target, "down", 4_000_000, 2, verify=True), 0)
        self.assertGreater(transfer(target, "up", 4_000_000, 2, verify=True), 0)


class SinkDropPathTests(unittest.TestCase):
    """The unverified upload goes through the kernel-drop path (in-process asyncio server)."""

    def test_unverified_upload_takes_the_drop_path(self) -> None:
        import asyncio

        taken: list[bool] = []

        class Spy(SinkProtocol):
            def _drop_rest(self) -> bool:
                taken.append(super()._drop_rest())
                return taken[-1]

        async def run() -> bytes:
            server = await asyncio.get_running_loop().create_server(Spy, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request(b"U", 5_000_000) + b"h")
            for piece in pattern_chunks(5_000_000 - 1):
                writer.write(piece)
                await writer.drain()
            answer = await asyncio.wait_for(reader.readexactly(32), 30)
            writer.close()
            server.close()
            return answer

        self.assertEqual(asyncio.run(run()), bytes(32))
        self.assertEqual(taken, [True])
