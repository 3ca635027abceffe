"""CPU per connection (or per GB) of each proxy process, without a profiler, alternated.

``python -m benchmarks.cpu SETUP [--load connect|up|down] [--count N] [--streams S]
[--impl vtwist v2ray] [--tree DIR ...] [--reps R] [--tls tcp|ws] [--mux] [--conc C]``

SETUP: ``socks`` (SOCKS5 -> freedom) or a VMess body security for the TCP chain
(``aes-128-gcm``, ``chacha20-poly1305``, ``none``). ``connect``: ``--count`` short
connections from ``--conc`` workers (8; issue 17 names 16 for the chain); ``up``/``down``: ``--count`` MB over ``--streams`` streams.
``--tls tcp|ws``: the VMess chain over tcp+tls or ws+tls with session resumption on (the
``handshake`` suite's resuming set-ups). ``--mux``: the VMess (aes-128-gcm) chain with
``mux`` on in the client (the ``mux`` suite's set-up; CPU per session).
Each ``--tree`` is a vtwist source tree run beside the installed one (its processes get
``PYTHONPATH=DIR``), e.g. the tree before a change. Every repetition runs each setup once in
turn (A B A B ...); the medians of user+system CPU of each process come out in ms per
connection (or s per GB), with the user/system split, beside the rate. This is the figure
that survives a busy machine best: the alternation puts every setup under the same load.
A second line per setup gives the same for the sink and the load generator (this process)
and the share of the machine left idle: a sink or generator that costs as much as a proxy,
or a machine half idle at a low rate, means the rate measures them or latency, not the
proxy (that is how the sink's 0.18 ms per connection showed, 6 Dec 2026).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.__main__ import start_sink, stop_sink
from benchmarks.core import warm_up
from benchmarks.loadgen import Target, connect_rate, transfer
from benchmarks.procs import CLK_TCK, ProcessGroup
from benchmarks.setups import Chain, Setup, SocksProxy


def _user_system(pid: int) -> tuple[float, float]:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def _tls_streams(network: str | None, workdir: Path) -> tuple[dict | None, dict | None]:
    """(client, server) ``streamSettings`` over ``network``+tls resuming, or (None, None)."""
    if not network:
        return None, None
    from benchmarks.configs import tls_stream
    from benchmarks.handshake import with_resumption
    from benchmarks.tls import make_server_cert

    cert, key = make_server_cert(workdir)
    return (with_resumption(tls_stream(network, False, cert, key), True),
            with_resumption(tls_stream(network, True, cert, key), True))


def _machine_idle() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs so far (``/proc/stat``; iowait counts as idle)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def run_once(setup_name: str, impl: str, load: str, count: int, streams: int,
             tree: str | None, tls: str | None = None, mux: bool = False,
             conc: int = 8) -> tuple[float, list[tuple[str, float, float]], float]:
    """One run: (rate, [(process, user, system) per connection or per GB], idle share).
    The processes are the setup's, then ``sink`` and ``loadgen``."""
    env = {"PYTHONPATH": tree} if tree else None  # (the group puts this repo first else)
    workdir = Path(tempfile.mkdtemp(prefix="vtwist-cpu-"))
    sink, sink_port = start_sink(workdir)
    group = ProcessGroup(workdir)
    try:
        client_stream, server_stream = _tls_streams(tls, workdir)
        setup: Setup
        if setup_name == "socks":
            setup = SocksProxy(impl, env=env)
        elif mux:
            from benchmarks.mux import MuxChain

            setup = MuxChain(impl, "cpu-mux", client_stream, server_stream, env=env)
        else:
            setup = Chain(impl, setup_name, f"cpu-{setup_name}", client_stream, server_stream,
                          env=env)
        setup.start(group)
        target = Target(setup.socks_port, sink_port)
        warm_up(setup, target)
        connect_rate(target, 200)
        time.sleep(0.5)
        names = [p.name for p in setup.procs] + ["sink", "loadgen"]

        def sample() -> list[tuple[float, float]]:
            mine = os.times()
            return [_user_system(p.pid) for p in setup.procs] + [
                _user_system(sink.pid), (mine.user, mine.system)]

        before, idle_before = sample(), _machine_idle()
        if load == "connect":
            rate, _, _ = connect_rate(target, count, workers=conc)
            per = count
        else:
            seconds = transfer(target, load, count * 1_000_000, streams)
            rate, per = count / seconds, count / 1000
        after, idle_after = sample(), _machine_idle()
        total = idle_after[1] - idle_before[1]
        idle = (idle_after[0] - idle_before[0]) / total if total else 0.0
        return rate, [(name, (a[0] - b[0]) / per, (a[1] - b[1]) / per)
                      for name, a, b in zip(names, after, before, strict=True)], idle
    finally:
        group.close()
        stop_sink(sink)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Alternate the setups, print medians."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setup")
    p.add_argument("--load", choices=["connect", "up", "down"], default="connect")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--impl", nargs="*", default=["vtwist"], choices=["vtwist", "v2ray"])
    p.add_argument("--tree", nargs="*", default=[])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--tls", choices=["tcp", "ws"], default=None)
    p.add_argument("--mux", action="store_true")
    p.add_argument("--conc", type=int, default=8,
                   help="connect: connections in flight (the load generator's workers)")
    args = p.parse_args(argv)
    if args.mux and args.setup != "aes-128-gcm":
        p.error("--mux runs the aes-128-gcm VMess chain: give aes-128-gcm as the setup")
    runs: list[tuple[str, str, str | None]] = [(impl, impl, None) for impl in args.impl]
    runs += [("vtwist", f"vtwist@{tree}", tree) for tree in args.tree]
    unit = "ms per connection" if args.load == "connect" else "s per GB"
    scale = 1000 if args.load == "connect" else 1
    results: dict[str, list[tuple[float, list[tuple[str, float, float]], float]]] = {}
    for _ in range(args.reps):
        for impl, label, tree in runs:
            results.setdefault(label, []).append(
                run_once(args.setup, impl, args.load, args.count, args.streams, tree, args.tls,
                         args.mux, args.conc))
    rate_unit = "conn/s" if args.load == "connect" else "MB/s"
    over = (" with mux" if args.mux else "") + (f" over {args.tls}+tls" if args.tls else "")
    over += f", {args.conc} in flight" if args.load == "connect" and args.conc != 8 else ""
    print(f"{args.setup}{over} {args.load} x{args.count}: medians of {args.reps} alternated runs; "
          f"CPU in {unit} (user + system)")
    for label, reps in results.items():
        rate = statistics.median(r[0] for r in reps)
        parts = []
        for i, (name, _, _) in enumerate(reps[0][1]):
            user = statistics.median(r[1][i][1] for r in reps) * scale
            system = statistics.median(r[1][i][2] for r in reps) * scale
            parts.append(f"{name.rsplit('-', 1)[-1]} {user + system:.3f} "
                         f"({user:.3f} + {system:.3f})")
        proxies, others = parts[:-2], parts[-2:]
        idle = statistics.median(r[2] for r in reps)
        print(f"  {label:24} {rate:8.0f} {rate_unit}   " + ", ".join(proxies))
        print(f"  {'':24} {'':8} {'':{len(rate_unit)}}   " + ", ".join(others)
              + f"; machine {100 * idle:.0f} % idle")


if __name__ == "__main__":
    main()
