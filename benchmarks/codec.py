"""``python -m benchmarks.codec [--mb N] [--reps N]``: the VMess body codec alone.

Encodes 64 KiB writes with ``BodyEncoder.encode_sequence`` (plus the join Twisted's
``doWrite`` does) and decodes the wire in 64 KiB reads (fresh copies, as ``recv`` gives, plus
the join the client does), for each security at V2Ray's 2048-byte chunks and vtwist's 16 KiB
default. Prints MB/s of process CPU time (median of ``--reps`` runs, alternated), so other
work on the machine disturbs it less than wall-clock figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from vtwist.proxy.vmess.body import (
    DEFAULT_SEND_CHUNK,
    MAX_CHUNK,
    SEC_AES128_GCM,
    SEC_CHACHA20_POLY1305,
    SEC_LEGACY,
    SEC_NONE,
    BodyDecoder,
    BodyEncoder,
)
from vtwist.proxy.vmess.handshake import default_option

KEY, IV = bytes(range(16)), bytes(range(16, 32))
WRITE = 65536
SECURITIES = {"aes-128-gcm": SEC_AES128_GCM, "chacha20-poly1305": SEC_CHACHA20_POLY1305,
              "none": SEC_NONE, "legacy": SEC_LEGACY}


def _cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(security: int, chunk: int, total: int) -> tuple[Callable[[], float],
                                                          Callable[[], float]]:
    """(encode run, decode run) for one security and chunk size; each returns CPU seconds."""
    option = default_option(security)  # the options a 4.34 client sends
    data = os.urandom(WRITE)
    writes = max(1, total // WRITE)
    enc = BodyEncoder(security, option, KEY, IV, chunk_size=chunk)
    wire = b"".join(b"".join(enc.encode_sequence(data)) for _ in range(writes))
    reads = [wire[i:i + WRITE] for i in range(0, len(wire), WRITE)]

    def encode() -> float:
        e = BodyEncoder(security, option, KEY, IV, chunk_size=chunk)
        return _cpu(lambda: [b"".join(e.encode_sequence(data)) for _ in range(writes)])

    def decode() -> float:
        d = BodyDecoder(security, option, KEY, IV)

        def run() -> None:
            for r in reads:
                b"".join(d.feed(bytes(bytearray(r))))
        return _cpu(run)

    return encode, decode


def main(argv: list[str] | None = None) -> int:
    """Print encode/decode MB/s (CPU time) per security and chunk size."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.codec", description=__doc__)
    p.add_argument("--mb", type=int, default=64, help="MB per run (default 64)")
    p.add_argument("--reps", type=int, default=7, help="runs per figure (default 7)")
    args = p.parse_args(argv)
    total = args.mb * 1024 * 1024
    print(f"VMess body codec, {args.mb} MB of 64 KiB writes/reads, MB/s of CPU time "
          f"(median of {args.reps}; min-max)")
    print(f"{'security':20} {'chunk':>6} {'encode':>20} {'decode':>20}")
    for name, security in SECURITIES.items():
        for chunk in (MAX_CHUNK, DEFAULT_SEND_CHUNK):
            enc_run, dec_run = measure(security, chunk, total)
            enc, dec = [], []
            for _ in range(args.reps):
                enc.append(enc_run())
                dec.append(dec_run())
            cells = []
            for times in (enc, dec):
                rate = [total / t / 1e6 for t in times]
                cells.append(f"{statistics.median(rate):6.0f} ({min(rate):.0f}-{max(rate):.0f})")
            print(f"{name:20} {chunk:>6} {cells[0]:>20} {cells[1]:>20}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
