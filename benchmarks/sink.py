"""The target server of every benchmark, run as its own process: ``python -m benchmarks.sink``.

It prints its TCP port on stdout, then serves until stdin closes (or SIGTERM). Each
connection starts with a 14-byte request header (see :mod:`benchmarks.wire`):

* ``U`` (upload): read LENGTH bytes (hashing them when the verify flag is set), then answer
  with 32 bytes: the sha256 (or zeros when not verifying). Without the flag the kernel
  drops them (``recv`` with ``MSG_TRUNC``: no copy into this process), so the sink costs the
  shared cores next to nothing per byte.
* ``D`` (download): send LENGTH bytes of the shared payload pattern.
* ``E`` (echo): send back whatever arrives.
* ``C`` (connect): answer one byte.

asyncio with a ``BufferedProtocol`` reading into one 1 MiB buffer keeps the per-byte cost at
the kernel's copy where the bytes are needed (echo, a verified upload).

Why uploads are dropped uncopied (6 Dec 2026): with 16 upload streams through the SOCKS
proxies, ``perf`` put the sink's copy out of the socket at 23 % of the whole machine's
samples (74 % of a core, cache-cold: the bytes come from another process's pages), more
than the splicing proxy it measured (13 %); that copy set the rate.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import sys

from benchmarks.wire import HEADER, HEADER_SIZE, PATTERN, PATTERN_SIZE

READ_SIZE = 1 << 20
_shared_buffer = bytearray(READ_SIZE)


class SinkProtocol(asyncio.BufferedProtocol):
    """One benchmark connection on the target side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.header = bytearray()
        self.mode = b""
        self.remaining = 0
        self.hasher: hashlib._Hash | None = None
        self.paused = False
        self.offset = 0
        # Only echo connections get a buffer of their own, made when the header says so:
        # a 1 MiB buffer zeroed per connection cost more than either proxy's whole
        # connection set-up in the connection-rate runs.
        self.echo_buffer: bytearray | None = None
        #: the copy of the socket an unverified upload is dropped through (see _drop_rest)
        self.dropper: socket.socket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set TCP_NODELAY (latency runs) and wait for the header."""
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Echo needs its own buffer (bytes are written back); others share one."""
        if self.echo_buffer is not None:
            return memoryview(self.echo_buffer)
        return memoryview(_shared_buffer)

    def buffer_updated(self, nbytes: int) -> None:
        """Dispatch on the mode once the header is complete."""
        buf = self.echo_buffer if self.echo_buffer is not None else _shared_buffer
        view = memoryview(buf)[:nbytes]
        if not self.mode:
            need = HEADER_SIZE - len(self.header)
            self.header += view[:need]
            view = view[need:]
            if len(self.header) < HEADER_SIZE:
                return
            magic, mode, flags, length = HEADER.unpack(self.header)
            if magic != b"VTB1":
                self.transport.close()  # type: ignore[union-attr]
                return
            self.mode, self.remaining = mode, length
            if mode == b"U" and flags & 1:
                self.hasher = hashlib.sha256()
            elif mode == b"D":
                self._send_more()
            elif mode == b"C":
                self.transport.write(b"K")  # type: ignore[union-attr]
            elif mode == b"E":
                self.echo_buffer = bytearray(READ_SIZE)
        if not len(view):
            return
        if self.mode == b"U" and self.hasher is None and self.remaining > len(view):
            self.remaining -= len(view)
            if self._drop_rest():
                return
        if self.mode == b"U":
            take = view[:self.remaining]
            if self.hasher is not None:
                self.hasher.update(take)
            self.remaining -= len(take)
            if self.remaining == 0:
                digest = self.hasher.digest() if self.hasher is not None else bytes(32)
                self.transport.write(digest)  # type: ignore[union-attr]
                self.hasher = None
        elif self.mode == b"E":
            self.transport.write(bytes(view))  # type: ignore[union-attr]

    def _drop_rest(self) -> bool:
        """Let the kernel drop the rest of an unverified upload (``MSG_TRUNC``) through a
        reader of its own on a copy of the socket, the transport paused meanwhile; False
        where there is no socket to read (the copying path then goes on)."""
        sock = self.transport.get_extra_info("socket")  # type: ignore[union-attr]
        if sock is None:
            return False
        self.transport.pause_reading()  # type: ignore[union-attr]
        raw = self.dropper = socket.socket(fileno=os.dup(sock.fileno()))
        raw.setblocking(False)
        asyncio.get_running_loop().add_reader(raw.fileno(), self._drop)
        return True

    def _drop(self) -> None:
        """Drop what arrived (up to the upload's end); answer once it is all in."""
        raw = self.dropper
        assert raw is not None
        try:
            n = raw.recv_into(_shared_buffer, min(self.remaining, READ_SIZE), socket.MSG_TRUNC)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        self.remaining -= n
        if n and self.remaining > 0:
            return
        asyncio.get_running_loop().remove_reader(raw.fileno())
        raw.close()
        self.dropper = None
        if self.transport is None:
            return
        if not n:  # the client left before the end
            self.transport.close()
            return
        self.transport.write(bytes(32))
        self.transport.resume_reading()

    def _send_more(self) -> None:
        """Write pattern slices until LENGTH is sent or the transport asks to pause."""
        transport = self.transport
        assert transport is not None
        while self.remaining > 0 and not self.paused:
            n = min(self.remaining, PATTERN_SIZE - self.offset, 1 << 20)
            transport.write(PATTERN[self.offset:self.offset + n])
            self.offset = (self.offset + n) % PATTERN_SIZE
            self.remaining -= n

    def pause_writing(self) -> None:
        """The kernel buffer is full: stop producing (and stop reading echoes)."""
        self.paused = True
        if self.mode == b"E" and self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        """Go on producing."""
        self.paused = False
        if self.mode == b"D":
            self._send_more()
        elif self.mode == b"E" and self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        """Close when the client half-closes."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing to clean up."""
        self.transport = None


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: done.done() or done.set_result(None))
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        if not done.done():
            done.set_result(None)

    watcher = asyncio.ensure_future(watch_stdin())
    await done
    watcher.cancel()
    server.close()


def main() -> None:
    """Serve until stdin closes or SIGTERM."""
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
