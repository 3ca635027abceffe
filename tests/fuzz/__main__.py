"""Long fuzz runs: ``python -m tests.fuzz TARGET [--minutes N] [--engine atheris|mutate]``.

``TARGET`` is a name from :data:`tests.fuzz.targets.TARGETS` (``all`` runs each in turn for
``--minutes``; ``list`` prints the names). The ``atheris`` engine (coverage-guided, when the
package is installed) starts from the seeds; the ``mutate`` engine needs nothing: random
inputs, seeds mutated (bit flips, inserted/deleted/duplicated runs, splices, interesting
lengths) and every seed truncated at every offset. A finding (an exception other than the
target's own error type) is printed with its traceback and saved under ``--out``; the run ends
with one summary line: target, engine, executions, seconds, findings.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator

from tests.fuzz.targets import TARGETS, Target

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x3FFF, 0x4000, 0x7FFF, 0xFFFF, 0x10000)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One to four random edits of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        at = rng.randint(0, len(buf))
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:  # random byte
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 2:  # insert random bytes
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and buf:  # delete a run
            del buf[at:at + rng.randint(1, 16)]
        elif op == 4 and buf:  # duplicate a run
            j = rng.randrange(len(buf))
            buf[at:at] = buf[j:j + rng.randint(1, 32)]
        elif op == 5 and len(buf) >= 2:  # an interesting 16-bit value
            i = rng.randrange(len(buf) - 1)
            buf[i:i + 2] = (rng.choice(INTERESTING) & 0xFFFF).to_bytes(2, "big")
        elif op == 6 and pool:  # splice with another input
            other = rng.choice(pool)
            j = rng.randint(0, len(other))
            buf = buf[:at] + bytearray(other[j:])
        else:  # truncate
            del buf[at:]
    return bytes(buf)


def inputs(rng: random.Random, seeds: list[bytes]) -> Iterator[bytes]:
    """Every seed truncated at every offset, then forever: random or mutated inputs."""
    for seed in seeds:
        for i in range(len(seed) + 1):
            yield seed[:i]
    pool = list(seeds)
    while True:
        r = rng.random()
        if r < 0.15 or not pool:
            yield rng.randbytes(rng.randint(0, 300))
        else:
            yield mutate(rng, rng.choice(pool), pool)


def _finding(target: Target, data: bytes, out: str) -> str:
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"{target.name}-{len(data)}-{abs(hash(data)) % 10**8}.bin")
    with open(path, "wb") as f:
        f.write(data)
    return path


def run_mutate(target: Target, seconds: float, seed: int, out: str) -> tuple[int, int]:
    """Run ``target`` for ``seconds``; (executions, findings)."""
    rng = random.Random(seed)
    seeds = target.seeds()
    deadline = time.monotonic() + seconds
    execs = findings = 0
    seen: set[str] = set()
    pool_add = 0
    for data in inputs(rng, seeds):
        cut = rng.randrange(1 << 16)
        try:
            target.run(data, cut)
        except target.allowed:
            pass
        except Exception as e:  # noqa: BLE001 - this is what a finding is
            where = "".join(traceback.format_tb(e.__traceback__)[-1:])
            key = f"{type(e).__name__}:{where}"
            if key not in seen:
                seen.add(key)
                findings += 1
                path = _finding(target, data, out)
                print(f"FINDING {target.name}: {type(e).__name__}: {e} (input {path})\n"
                      + "".join(traceback.format_exception(e)), file=sys.stderr, flush=True)
        execs += 1
        if execs % 64 == 0:
            if time.monotonic() > deadline:
                break
            if pool_add < 200 and rng.random() < 0.05:  # keep a few mutants as seeds
                seeds.append(data)
                pool_add += 1
    return execs, findings


def run_atheris(target: Target, seconds: float, out: str,
                corpus: str | None = None) -> tuple[int, int]:
    """Coverage-guided: atheris with the seeds (and ``corpus``, a directory an earlier run
    grew, to go on from there) as its corpus (exits the process)."""
    import atheris

    corpus = corpus or tempfile.mkdtemp(prefix=f"fuzz-{target.name}-")
    os.makedirs(corpus, exist_ok=True)
    with atheris.instrument_imports(include=["vtwist", "h11", "wsproto"]):
        for i, seed in enumerate(target.seeds()):  # imports the codecs, instrumented
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(b"\x00\x00" + seed)
            target.run(seed, 0)

    def one(raw: bytes) -> None:
        cut = int.from_bytes(raw[:2], "big")
        try:
            target.run(raw[2:], cut)
        except target.allowed:
            pass

    os.makedirs(out, exist_ok=True)
    atheris.Setup([sys.argv[0], f"-max_total_time={int(seconds)}", "-print_final_stats=1",
                   f"-artifact_prefix={out}/{target.name}-", "-rss_limit_mb=1024", corpus], one)
    atheris.Fuzz()
    return 0, 0


def main(argv: list[str] | None = None) -> int:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("target", help="a target name, 'all' or 'list'")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--engine", choices=("mutate", "atheris"), default="mutate")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default="fuzz-findings")
    p.add_argument("--corpus", default=None,
                   help="atheris: the corpus directory to grow (default: a new one)")
    args = p.parse_args(argv)
    if args.target == "list":
        print("\n".join(TARGETS))
        return 0
    names = list(TARGETS) if args.target == "all" else [args.target]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target {unknown[0]!r} (one of: {', '.join(TARGETS)})")
    total = 0
    for name in names:
        target = TARGETS[name]
        started = time.monotonic()
        if args.engine == "atheris":
            run_atheris(target, args.minutes * 60, args.out, args.corpus)
            continue
        seed = args.seed if args.seed is not None else random.randrange(1 << 32)
        execs, findings = run_mutate(target, args.minutes * 60, seed, args.out)
        total += findings
        print(f"{name}: engine mutate seed {seed}: {execs} executions in "
              f"{time.monotonic() - started:.0f} s, {findings} findings", flush=True)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
