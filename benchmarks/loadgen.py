"""The client side of the load: plain blocking sockets in threads, large reads and writes.

Every operation opens a SOCKS5 (or HTTP CONNECT) connection to the proxy under test, asks it for the sink,
sends a request header (:mod:`benchmarks.wire`) and moves data. sendall/recv_into on 1 MiB
buffers release the GIL, so threads scale to many streams at the kernel's copy cost.
Each call is bounded by socket timeouts and counts.
"""

from __future__ import annotations

import hashlib
import itertools
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.wire import (
    http_connect,
    pattern_chunks,
    pattern_digest,
    recv_exact,
    request,
    socks5_connect,
)

IO_TIMEOUT = 120.0
CHUNK = 1 << 20


@dataclass
class Target:
    """Where the load goes: the proxy's SOCKS5 port and the sink behind it."""

    socks_port: int  # the proxy's entry port (SOCKS5 or HTTP, as ``entry`` says)
    sink_port: int
    host: str = "127.0.0.1"
    direct: bool = False  # straight to the sink, no proxy: the load generator's ceiling
    entry: str = "socks5"  # how a stream enters the proxy: "socks5" or "http" (CONNECT)


def open_stream(target: Target, timeout: float = IO_TIMEOUT) -> socket.socket:
    """A socket through the proxy to the sink (SOCKS5 handshake done)."""
    port = target.sink_port if target.direct else target.socks_port
    sock = socket.create_connection((target.host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if target.direct:
            pass
        elif target.entry == "http":
            http_connect(sock, target.host, target.sink_port)
        else:
            socks5_connect(sock, target.host, target.sink_port)
    except BaseException:
        sock.close()
        raise
    return sock


def do_upload(sock: socket.socket, length: int, verify: bool) -> None:
    """Send ``length`` pattern bytes; wait for the sink's 32-byte answer."""
    sock.sendall(request(b"U", length, verify))
    for piece in pattern_chunks(length, chunk=CHUNK):
        sock.sendall(piece)
    answer = recv_exact(sock, 32)
    if verify and answer != pattern_digest(length):
        raise ValueError("upload sha256 mismatch")


def do_download(sock: socket.socket, length: int, verify: bool) -> None:
    """Ask for ``length`` bytes and read them all (hashing when ``verify``)."""
    sock.sendall(request(b"D", length, verify))
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    hasher = hashlib.sha256() if verify else None
    got = 0
    # unverified: the kernel drops the bytes (no copy into this process, as the sink does
    # with an unverified upload), so the generator costs the shared cores little per byte
    flags = 0 if verify else socket.MSG_TRUNC
    while got < length:
        n = sock.recv_into(view, min(CHUNK, length - got), flags)
        if n == 0:
            raise ConnectionError(f"download closed after {got} of {length} bytes")
        if hasher is not None:
            hasher.update(view[:n])
        got += n
    if hasher is not None and hasher.digest() != pattern_digest(length):
        raise ValueError("download sha256 mismatch")


def transfer(target: Target, direction: str, total: int, streams: int,
             verify: bool = False) -> float:
    """Move ``total`` bytes split over ``streams`` parallel streams; returns seconds.

    Connections are opened first; the clock runs from the moment every stream is ready
    until the last byte is acknowledged (upload) or received (download).
    """
    per_stream = total // streams
    op = do_upload if direction == "up" else do_download
    socks: list[socket.socket] = []
    try:
        for _ in range(streams):
            socks.append(open_stream(target))
    except BaseException:
        for s in socks:
            s.close()
        raise
    errors: list[BaseException] = []
    barrier = threading.Barrier(streams + 1)

    def worker(sock: socket.socket) -> None:
        try:
            barrier.wait(IO_TIMEOUT)
            op(sock, per_stream, verify)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in socks]
    try:
        for t in threads:
            t.start()
        barrier.wait(IO_TIMEOUT)
        start = time.perf_counter()
        deadline = time.monotonic() + IO_TIMEOUT * 2
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        elapsed = time.perf_counter() - start
    finally:
        for s in socks:
            s.close()
    if errors:
        raise errors[0]
    if any(t.is_alive() for t in threads):
        raise TimeoutError("a transfer thread did not finish")
    return elapsed


def connect_once(target: Target, timeout: float = 30.0) -> None:
    """One full connection: SOCKS5 handshake, one request, one byte back, close."""
    sock = open_stream(target, timeout=timeout)
    try:
        sock.sendall(request(b"C"))
        recv_exact(sock, 1)
    finally:
        sock.close()


def connect_rate(target: Target, count: int, workers: int = 8,
                 timeout: float = 30.0) -> tuple[float, list[float], int]:
    """``count`` connections from ``workers`` threads.

    Returns (successful connections/s, each one's seconds, how many failed or timed out).
    More than a tenth failing raises: the proxy is broken, not unlucky.
    """
    counter = itertools.count()
    times: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        while next(counter) < count and len(errors) <= count // 10:
            t0 = time.perf_counter()
            try:
                connect_once(target, timeout)
            except (OSError, ValueError) as e:
                errors.append(e)
                continue
            times.append(time.perf_counter() - t0)

    start = time.perf_counter()
    _run_threads(worker, workers)
    elapsed = time.perf_counter() - start
    if len(errors) > count // 10:
        raise errors[0]
    return len(times) / elapsed, times, len(errors)


def echo_latency(target: Target, count: int, size: int = 1024, warmup: int = 20) -> list[float]:
    """Round-trip times (s) of ``count`` ``size``-byte messages on one connection."""
    sock = open_stream(target, timeout=30.0)
    payload = bytes(PAYLOAD_1K[:size]) if size <= len(PAYLOAD_1K) else bytes(size)
    buf = bytearray(size)
    view = memoryview(buf)
    times = []
    try:
        sock.sendall(request(b"E"))
        for i in range(warmup + count):
            t0 = time.perf_counter()
            sock.sendall(payload)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:])
                if n == 0:
                    raise ConnectionError("echo connection closed")
                got += n
            if i >= warmup:
                times.append(time.perf_counter() - t0)
        if buf != payload:
            raise ValueError("echo payload mismatch")
    finally:
        sock.close()
    return times


def parallel_complete(target: Target, streams: int, per_stream: int,
                      timeout: float) -> tuple[int, float]:
    """Download ``per_stream`` bytes on each of ``streams`` streams at once.

    Returns (streams that completed within ``timeout`` s, seconds taken).
    """
    done = [0]
    lock = threading.Lock()

    def worker() -> None:
        try:
            sock = open_stream(target, timeout=timeout)
            try:
                do_download(sock, per_stream, False)
            finally:
                sock.close()
        except (OSError, ValueError):
            return
        with lock:
            done[0] += 1

    start = time.perf_counter()
    _run_threads(worker, streams, join_timeout=timeout + 5)
    return done[0], time.perf_counter() - start


PAYLOAD_1K = bytes(range(256)) * 4


def _run_threads(worker: Callable[[], None], n: int, join_timeout: float = 600.0) -> None:
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + join_timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
