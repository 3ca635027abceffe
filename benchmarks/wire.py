"""What the load generator and the sink agree on: request header, payload pattern, SOCKS5
and HTTP CONNECT.

The payload is one pseudo-random 1 MiB pattern repeated, built once, so a stream of any
length has a digest the other end can compute without storing the stream.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import time
from functools import lru_cache

HEADER = struct.Struct("!4scBQ")  # magic, mode, flags, length
HEADER_SIZE = HEADER.size
PATTERN_SIZE = 1 << 20
PATTERN = memoryview(random.Random(20261124).randbytes(PATTERN_SIZE))
VERIFY = 1


def request(mode: bytes, length: int = 0, verify: bool = False) -> bytes:
    """The 14-byte header that opens every benchmark connection."""
    return HEADER.pack(b"VTB1", mode, VERIFY if verify else 0, length)


def pattern_chunks(length: int, offset: int = 0, chunk: int = PATTERN_SIZE):
    """Yield memoryview slices of the repeated pattern covering ``length`` bytes."""
    while length > 0:
        n = min(length, PATTERN_SIZE - offset, chunk)
        yield PATTERN[offset:offset + n]
        offset = (offset + n) % PATTERN_SIZE
        length -= n


@lru_cache(maxsize=64)
def pattern_digest(length: int) -> bytes:
    """sha256 of the first ``length`` bytes of the repeated pattern."""
    h = hashlib.sha256()
    for piece in pattern_chunks(length):
        h.update(piece)
    return h.digest()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes or raise ``ConnectionError``."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def socks5_connect(sock: socket.socket, host: str, port: int) -> None:
    """RFC 1928 no-auth CONNECT to an IPv4 ``host`` on an open socket."""
    sock.sendall(b"\x05\x01\x00")
    if recv_exact(sock, 2) != b"\x05\x00":
        raise ConnectionError("SOCKS5 greeting refused")
    sock.sendall(b"\x05\x01\x00\x01" + socket.inet_aton(host) + struct.pack("!H", port))
    head = recv_exact(sock, 4)
    if head[1] != 0:
        raise ConnectionError(f"SOCKS5 CONNECT failed with reply {head[1]}")
    atyp = head[3]
    rest = {1: 4, 4: 16}.get(atyp)
    if rest is None:
        rest = recv_exact(sock, 1)[0]
    recv_exact(sock, rest + 2)


def http_connect(sock: socket.socket, host: str, port: int) -> None:
    """An HTTP ``CONNECT host:port`` on an open socket; raises unless the answer is 2xx.

    Peeks for the head's blank line and reads just the head, so nothing after it is taken.
    """
    authority = f"{host}:{port}".encode()
    sock.sendall(b"CONNECT " + authority + b" HTTP/1.1\r\nHost: " + authority + b"\r\n\r\n")
    while True:
        peek = sock.recv(8192, socket.MSG_PEEK)
        if not peek:
            raise ConnectionError("closed before the HTTP CONNECT answer")
        end = peek.find(b"\r\n\r\n")
        if end >= 0:
            head = recv_exact(sock, end + 4)
            break
        if len(peek) >= 8192:
            raise ConnectionError("HTTP CONNECT answer head too long")
        time.sleep(0.0005)  # the rest of the head is on its way
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 1 else b""
    if not status.startswith(b"2"):
        raise ConnectionError(f"HTTP CONNECT failed: {bytes(head.splitlines()[0])!r}")
