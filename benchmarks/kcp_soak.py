"""mKCP soak: ``python -m benchmarks.kcp_soak [--mb 100] [--header NAME ...] [--seed both]``.

For every header type, without and with a ``seed``: a client pushes ``--mb`` MB to an echo
server through the userspace impairment relay (:mod:`vtwist.testing.udprelay`) at 10 % loss
each way with jitter, reordering, duplication and 1 % corruption, and reads it all back (so
``--mb`` each way). It checks the sha256 of what came back, that the listener has no session
left once the client closed (no stuck session), and reports goodput, the relay's counters,
CPU seconds per MB and the peak RSS growth. vtwist's endpoints only, one process (V2Ray's
mKCP is compared in the ``kcp`` suite). Exit status 1 if any run failed.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import sys
import time
from typing import Any

from twisted.internet import defer, protocol, task

from vtwist.testing.udprelay import Impairment, UDPImpairmentRelay
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.endpoints import KCPClientEndpoint, KCPServerEndpoint
from vtwist.transport.kcp.obfs import HEADER_TYPES

IMPAIRMENT = Impairment(loss=0.10, delay=0.002, jitter=0.002, reorder=0.05, reorder_gap=0.004,
                        duplicate=0.05, corrupt=0.01)
CHUNK = 65536


class Echo(protocol.Protocol):
    """The server side: every byte back."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Pusher(protocol.Protocol):
    """Writes ``size`` seeded bytes as a streaming producer and hashes the echo."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.sent = hashlib.sha256()
        self.got = hashlib.sha256()
        self.off = 0
        self.received = 0
        self.paused = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.off < self.size:
            block = self.rng.randbytes(min(CHUNK, self.size - self.off))
            self.sent.update(block)
            self.off += len(block)
            self.transport.write(block)
        if self.off >= self.size and self.transport.producer is self:
            self.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.off = self.size

    def dataReceived(self, data: bytes) -> None:
        self.got.update(data)
        self.received += len(data)
        if self.received >= self.size and not self.done.called:
            self.done.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(RuntimeError(f"lost after {self.received} bytes: {reason}"))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def soak(reactor: Any, header: str, seed: str | None, size: int, timeout: float,
               rng_seed: int) -> tuple[bool, str]:
    """One run; (ok, report line)."""
    config = KCPConfig(header_type=header, seed=seed)
    listening = await KCPServerEndpoint(reactor, 0, "127.0.0.1", config).listen(
        protocol.Factory.forProtocol(Echo))
    relay = UDPImpairmentRelay(reactor, ("127.0.0.1", listening.getHost().port),
                               IMPAIRMENT, IMPAIRMENT, seed=rng_seed)
    relay_port = relay.start()
    pusher = Pusher(size, rng_seed)
    cpu, wall, rss = time.process_time(), time.monotonic(), _rss_mb()
    name = f"{header}/{'seed' if seed else 'no seed'}"
    try:
        client = await KCPClientEndpoint(reactor, "127.0.0.1", relay_port, config).connect(
            protocol.Factory.forProtocol(lambda: pusher))
        await pusher.done.addTimeout(timeout, reactor)
        elapsed = time.monotonic() - wall
        clean = pusher.sent.digest() == pusher.got.digest()
        client.transport.loseConnection()
        await client.transport.terminated.addTimeout(60, reactor)
        sessions = listening.listener.sessions
        deadline = time.monotonic() + 30
        while sessions and time.monotonic() < deadline:  # the server side ends after a linger
            await task.deferLater(reactor, 0.2, lambda: None)
        stats = relay.stats
        up, down = stats["c2s"], stats["s2c"]
        used = time.process_time() - cpu
        line = (f"{name}: {size / 2**20:.0f} MB each way in {elapsed:.1f} s "
                f"({2 * size / 2**20 / elapsed:.2f} MB/s both ways), sha256 "
                f"{'clean' if clean else 'MISMATCH'}, sessions left {len(sessions)}, "
                f"CPU {used / (2 * size / 2**20):.2f} s/MB, peak RSS +{_rss_mb() - rss:.1f} MB; "
                f"relay up {_counts(up)}; down {_counts(down)}")
        return clean and not sessions, line
    except Exception as e:  # noqa: BLE001 - a failed run is reported, the others go on
        return False, f"{name}: FAILED after {pusher.received} bytes back: {e!r}"
    finally:
        await relay.stop()
        await listening.stopListening()


def _counts(d: Any) -> str:
    fields = ("received", "sent", "dropped", "duplicated", "reordered", "corrupted")
    return ", ".join(f"{f} {getattr(d, f)}" for f in fields if hasattr(d, f))


async def main(reactor: Any, argv: list[str] | None = None) -> None:
    """Every header type, without and with seed (or the ones asked for)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.kcp_soak",
                                description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=100.0, help="MB each way per run (default 100)")
    p.add_argument("--header", action="append", choices=list(HEADER_TYPES),
                   help="header type (repeatable; default all)")
    p.add_argument("--seed", choices=("none", "seed", "both"), default="both")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per run")
    args = p.parse_args(argv)
    seeds = {"none": [None], "seed": ["soak-seed"], "both": [None, "soak-seed"]}[args.seed]
    failures = 0
    for i, header in enumerate(args.header or list(HEADER_TYPES)):
        for seed in seeds:
            ok, line = await soak(reactor, header, seed, int(args.mb * 2**20), args.timeout,
                                  rng_seed=i + 1)
            print(("ok   " if ok else "FAIL ") + line, flush=True)
            failures += not ok
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
