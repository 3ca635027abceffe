"""``python -m benchmarks [suite ...] [--quick]``: vtwist beside V2Ray (and pproxy), same run.

Suites: socks, http, chain, kcp, tls, stats (default: all). ``python -m benchmarks geodata``
runs the geo data benchmark on its own (load time and memory of geosite/geoip lists). Every proxy and the sink run as child
processes on 127.0.0.1 and are killed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.core import MB, Context, measure_ceiling, run_group
from benchmarks.procs import REPO

SUITES = ("socks", "http", "chain", "kcp", "tls", "stats", "quic", "h2", "mux", "workers",
          "handshake")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suites", nargs="*", metavar="suite",
                   help=f"which suites to run ({', '.join(SUITES)}; default all)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, one run each, data verified: a smoke run of seconds")
    p.add_argument("--reps", type=int, default=None,
                   help="runs per metric and setup, alternated A B A B (default 3; quick 1)")
    p.add_argument("--verify", action="store_true",
                   help="check sha256 of every transfer (on by default with --quick)")
    p.add_argument("--json", type=Path, help="also write all results to this JSON file")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="record py-spy profiles of the vtwist processes into DIR")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    p.add_argument("--baseline", type=Path, metavar="DIR",
                   help="also run the vtwist source tree in DIR (e.g. an older commit "
                        "checked out there) beside this one, for before/after figures")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of failures")
    args = p.parse_args(argv)
    for name in args.suites:
        if name not in SUITES:
            p.error(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    return args


def start_sink(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The sink process; returns it and its port."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    sink = subprocess.Popen([sys.executable, "-m", "benchmarks.sink"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=open(workdir / "sink.log", "wb"),  # noqa: SIM115
                            env=env, cwd=str(REPO))
    assert sink.stdout is not None
    line = sink.stdout.readline()
    if not line.strip():
        sink.kill()
        raise RuntimeError("the sink did not start: see sink.log")
    return sink, int(line)


def stop_sink(sink: subprocess.Popen[bytes]) -> None:
    """Close its stdin (it exits), kill it if it lingers."""
    try:
        if sink.stdin is not None:
            sink.stdin.close()
        sink.wait(5)
    except (OSError, subprocess.TimeoutExpired):
        sink.kill()
        sink.wait(5)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen suites; exit status 1 when a vtwist setup failed to run at all."""
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["geodata"]:  # its own runner: start-up time and memory, no traffic
        from benchmarks import geodata

        return geodata.main(given[1:])
    args = parse_args(argv)
    suites = args.suites or list(SUITES)
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    workdir = Path(tempfile.mkdtemp(prefix="vtwist-bench-"))
    sink, sink_port = start_sink(workdir)
    ctx = Context(workdir=workdir, sink_port=sink_port, reps=reps, quick=args.quick,
                  verify=args.verify or args.quick, profile_dir=args.profile,
                  verbose=args.verbose, baseline=args.baseline)
    ctx.say(f"vtwist benchmarks: {' '.join(suites)}; {reps} run(s) per metric, median; "
            f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; work dir {workdir}")
    started = time.monotonic()
    failed = False
    try:
        measure_ceiling(ctx, (4 if args.quick else 256) * MB, 50 if args.quick else 2000)
        for name in suites:
            module = importlib.import_module(f"benchmarks.{name}")
            for group in module.groups(ctx):
                run_group(ctx, group)
                failed = failed or any(s.error for s in group.setups if s.family == "vtwist")
    finally:
        stop_sink(sink)
        if args.json:
            args.json.write_text(json.dumps({"suites": suites, "reps": reps, "quick": args.quick,
                                             "results": ctx.results}, indent=1))
        if args.keep:
            ctx.say(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    ctx.say(f"\ndone in {time.monotonic() - started:.0f} s; "
            f"load average {os.getloadavg()[0]:.2f} (other work on the machine skews figures)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
