"""One vtwist setup, one load, py-spy on every vtwist process: where does this load's time go?

``python -m benchmarks.focus SETUP LOAD [--mb N] [--conns N] [--out DIR]``

SETUP: ``socks`` (SOCKS5 -> freedom), ``kcp`` (the VMess aes-128-gcm chain over mKCP with
V2Ray's default kcpSettings) or a VMess body security for the TCP chain (``aes-128-gcm``,
``chacha20-poly1305``, ``none``), ``shadowsocks`` (the aes-128-gcm Shadowsocks chain), or
``mux`` / ``mux-tls`` (the VMess aes-128-gcm chain with Mux.Cool on, concurrency 8, over
plain tcp / tcp+tls). LOAD: ``up`` / ``down`` (one stream of ``--mb`` MB) or ``connect``
(``--conns`` connections from 8 workers). Prints the rate, the CPU per GB or per connection
of each process, and the summary of each process's profile
(main thread, blocking sampling at 400 Hz; idle ``epoll_wait`` left out).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.__main__ import start_sink, stop_sink
from benchmarks.configs import kcp_stream
from benchmarks.core import warm_up
from benchmarks.loadgen import Target, connect_rate, transfer
from benchmarks.procs import ProcessGroup
from benchmarks.profiling import start_spy, stop_spies, summarize
from benchmarks.setups import Chain, Setup, SocksProxy


def _mux_setup(name: str, workdir: Path) -> Setup:
    """The VMess chain with Mux.Cool on its client outbound (``mux-tls``: over tcp+tls)."""
    from benchmarks.configs import tls_stream
    from benchmarks.mux import MuxChain
    from benchmarks.tls import make_server_cert

    if name == "mux":
        return MuxChain("vtwist", "focus-mux")
    cert, key = make_server_cert(workdir)
    return MuxChain("vtwist", "focus-mux-tls", tls_stream("tcp", False, cert, key),
                    tls_stream("tcp", True, cert, key))


def main(argv: list[str] | None = None) -> None:
    """Run one focused, profiled load."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.focus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("setup")
    p.add_argument("load", choices=["up", "down", "connect"])
    p.add_argument("--mb", type=int, default=512)
    p.add_argument("--conns", type=int, default=3000)
    p.add_argument("--out", type=Path, default=Path("focus-profiles"))
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="vtwist-focus-"))
    sink, sink_port = start_sink(workdir)
    group = ProcessGroup(workdir)
    spies: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        setup: Setup
        if args.setup == "socks":
            setup = SocksProxy("vtwist")
        elif args.setup == "kcp":
            stream = kcp_stream()
            setup = Chain("vtwist", "aes-128-gcm", "focus-kcp", stream, stream, server_tcp=False)
        elif args.setup == "shadowsocks":
            setup = Chain("vtwist", "aes-128-gcm", "focus-ss", protocol="shadowsocks")
        elif args.setup in ("mux", "mux-tls"):
            setup = _mux_setup(args.setup, workdir)
        else:
            setup = Chain("vtwist", args.setup, f"focus-{args.setup}")
        setup.start(group)
        target = Target(setup.socks_port, sink_port)
        warm_up(setup, target)
        if args.load == "connect":
            connect_rate(target, 200)
        else:
            transfer(target, args.load, 16_000_000, 1)
        for proc in setup.procs:
            out = args.out / f"{args.setup}-{args.load}-{proc.name}.txt"
            spies.append((start_spy(proc.pid, out, 400), out))
        time.sleep(1.0)
        cpu0 = [proc.cpu_seconds() for proc in setup.procs]
        if args.load == "connect":
            rate, _, failed = connect_rate(target, args.conns)
            cpu = [proc.cpu_seconds() - c for proc, c in zip(setup.procs, cpu0, strict=True)]
            print(f"{args.setup} connect: {rate:.0f} conn/s ({failed} failed) while profiled; "
                  "CPU ms per connection: " + ", ".join(
                      f"{proc.name} {1000 * c / args.conns:.2f}"
                      for proc, c in zip(setup.procs, cpu, strict=True)))
        else:
            seconds = transfer(target, args.load, args.mb * 1_000_000, 1)
            cpu = [proc.cpu_seconds() - c for proc, c in zip(setup.procs, cpu0, strict=True)]
            print(f"{args.setup} {args.load}: {args.mb / seconds:.0f} MB/s while profiled; "
                  "CPU s per GB: " + ", ".join(
                      f"{proc.name} {1000 * c / args.mb:.2f}"
                      for proc, c in zip(setup.procs, cpu, strict=True)))
    finally:
        stop_spies([spy for spy, _ in spies])
        group.close()
        stop_sink(sink)
        shutil.rmtree(workdir, ignore_errors=True)
    for _, out in spies:
        if out.exists():
            print()
            print(summarize(out, 25))


if __name__ == "__main__":
    main()
