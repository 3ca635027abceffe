"""The benchmarks' sink per connection: what it answers, and what it allocates."""

from __future__ import annotations

from twisted.trial import unittest

from benchmarks.sink import SinkProtocol
from benchmarks.wire import pattern_chunks, pattern_digest, request


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
