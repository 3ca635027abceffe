"""Held connections: ``python -m benchmarks.hold [--conns 20000] [--hold 30] [--workers N]
[--only vtwist|v2ray] [--json FILE] [--keep]``.

SOCKS5 in -> VMess (aes-128-gcm, TCP) out -> VMess in -> freedom -> echo sinks on
127.0.0.2, the same JSON configs for vtwist and V2Ray (:mod:`benchmarks.configs`). Several
load processes (``--role load``, asyncio, at most :data:`PER_LOADER` connections each) open
``--conns`` connections between them, a few at a time: SOCKS5 greeting and CONNECT, then
nothing. Once every connection is open the run holds them ``--hold`` seconds, then each
connection echoes 1 KiB of its own and checks it. Several sink processes (``--role sink``,
``SO_REUSEPORT``) share the echo port so none of them runs out of descriptors.

Reported per run: connections established / echoed correctly / failed (and why), the
connections the sinks held at once, the RSS of each side (the sum over its processes: a
``--workers`` supervisor and its workers) before the load and at its peak, the memory per
held connection, and the CPU seconds of each side.

A relaying process holds two descriptors per connection: under a hard ``RLIMIT_NOFILE`` of
20,000 one process holds about 9,500. The run tries to raise the hard limit (root with
CAP_SYS_RESOURCE can); if it cannot, V2Ray (one process) runs at :func:`single_cap`
connections, vtwist once at that count (like for like) and once at ``--conns`` with
``--workers`` (default: enough for :data:`PER_WORKER` each). Every child runs in its own
process group and is killed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import configs
from benchmarks.procs import (
    Proc,
    ProcessGroup,
    descendants,
    free_port,
    wait_listeners,
    wait_port,
)
from benchmarks.setups import impl_argv

SINK_HOST = "127.0.0.2"
SECURITY = "aes-128-gcm"
#: connections per load process and per sink process (one descriptor each)
PER_LOADER = 8000
PER_SINK = 7000
#: connections per vtwist worker when ``--workers`` is not given (two descriptors each)
PER_WORKER = 7000
#: descriptors a relaying process keeps for itself (listeners, logs, the reactor)
RESERVED_FDS = 1000
#: seconds one SOCKS handshake or one echo may take
STEP_TIMEOUT = 60.0
ECHO_SIZE = 1024


# -- the sink --------------------------------------------------------------------------------
class _SinkState:
    def __init__(self) -> None:
        self.open = self.peak = self.accepted = 0


class _EchoProtocol(asyncio.Protocol):
    """Echoes what it reads; counts itself open while connected."""

    def __init__(self, state: _SinkState) -> None:
        self.state = state
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.state.open += 1
        self.state.accepted += 1
        self.state.peak = max(self.state.peak, self.state.open)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.open -= 1


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` at once (a reader never sees half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


async def sink_main(port: int, warm_port: int, status: Path) -> None:
    """One echo sink on SINK_HOST:``port`` (``SO_REUSEPORT``), its counts in ``status``;
    ``warm_port`` echoes the warm-up connections without counting them (a proxy may close
    those a few seconds late)."""
    state = _SinkState()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _EchoProtocol(state), SINK_HOST, port,
                                      reuse_port=True, backlog=4096)
    warm = _SinkState()
    await loop.create_server(lambda: _EchoProtocol(warm), SINK_HOST, warm_port,
                             reuse_port=True)
    async with server:
        while True:
            _write_json(status, {"open": state.open, "peak": state.peak,
                                 "accepted": state.accepted})
            await asyncio.sleep(0.5)


# -- the load --------------------------------------------------------------------------------
def socks_request(host: str, port: int) -> bytes:
    """SOCKS5 greeting (no auth) and CONNECT to IPv4 ``host``:``port``, pipelined."""
    return (b"\x05\x01\x00" + b"\x05\x01\x00\x01" + socket.inet_aton(host)
            + struct.pack(">H", port))


async def _socks_reply(reader: asyncio.StreamReader) -> None:
    """Read the method choice and the CONNECT reply; ValueError unless both say success."""
    head = await reader.readexactly(6)
    if head[:2] != b"\x05\x00" or head[2:4] != b"\x05\x00":
        raise ValueError(f"SOCKS reply {head.hex()}")
    atyp = head[5]
    rest = 6 if atyp == 1 else 18 if atyp == 4 else None
    if rest is None:
        rest = (await reader.readexactly(1))[0] + 2
    await reader.readexactly(rest)


async def load_main(socks_port: int, sink_port: int, count: int, inflight: int,
                    status: Path) -> None:
    """Open ``count`` held connections, report; on SIGUSR1 echo on each, report, exit."""
    loop = asyncio.get_running_loop()
    go = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, go.set)
    gate = asyncio.Semaphore(inflight)
    request = socks_request(SINK_HOST, sink_port)
    held: list[tuple[int, asyncio.StreamReader, asyncio.StreamWriter, float]] = []
    failed: Counter[str] = Counter()
    started = time.monotonic()

    async def open_one(i: int) -> None:
        async with gate:
            writer = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", socks_port), STEP_TIMEOUT)
                writer.write(request)
                await asyncio.wait_for(_socks_reply(reader), STEP_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - counted by kind
                failed[f"open: {type(e).__name__}"] += 1
                if writer is not None:
                    writer.close()
                return
            held.append((i, reader, writer, time.monotonic()))

    await asyncio.gather(*(open_one(i) for i in range(count)))
    opened = time.monotonic()
    _write_json(status, {"established": len(held), "failed": dict(failed),
                         "seconds": opened - started})
    await go.wait()
    echo_started = time.monotonic()
    ok = 0

    async def echo(i: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        payload = (struct.pack(">I", i) * (ECHO_SIZE // 4))[:ECHO_SIZE]
        try:
            writer.write(payload)
            got = await asyncio.wait_for(reader.readexactly(ECHO_SIZE), STEP_TIMEOUT)
        except asyncio.IncompleteReadError:
            failed["echo: closed"] += 1
            return False
        except Exception as e:  # noqa: BLE001 - counted by kind
            failed[f"echo: {type(e).__name__}"] += 1
            return False
        finally:
            writer.close()
        if got != payload:
            failed["echo: wrong bytes"] += 1
            return False
        return True

    results = await asyncio.gather(*(echo(i, r, w) for i, r, w, _ in held))
    ok = sum(results)
    holds = [echo_started - t for _, _, _, t in held]
    _write_json(status, {"established": len(held), "echoed": ok, "failed": dict(failed),
                         "seconds": opened - started, "echo_seconds":
                         time.monotonic() - echo_started,
                         "min_hold": min(holds) if holds else 0.0, "done": True})


# -- measuring -------------------------------------------------------------------------------
def side_pids(proc: Proc) -> list[int]:
    """A side's processes: the one started and its descendants (``--workers``)."""
    return [proc.pid, *descendants(proc.pid)]


def rss_kb(pids: list[int]) -> int:
    """The sum of VmRSS over ``pids`` (KiB)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def open_fds(pids: list[int]) -> list[int]:
    """The open descriptors of each of ``pids`` (0 when unreadable)."""
    counts = []
    for pid in pids:
        try:
            counts.append(len(os.listdir(f"/proc/{pid}/fd")))
        except OSError:
            counts.append(0)
    return counts or [0]


def read_json(path: Path) -> dict[str, Any] | None:
    """A status file, None while it does not exist yet."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def hard_limit() -> int:
    """The hard RLIMIT_NOFILE children inherit."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def single_cap(hard: int) -> int:
    """Connections one relaying process holds under ``hard`` (two descriptors each),
    rounded down to 500."""
    return max(500, (hard - RESERVED_FDS) // 2 // 500 * 500)


def try_raise_hard(conns: int) -> int:
    """Try to raise this process's hard limit so one process can relay ``conns``
    connections (children inherit it); the hard limit afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * conns + RESERVED_FDS
    if hard != resource.RLIM_INFINITY and hard < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, want))
    return hard_limit()


def _warm(socks_port: int, sink_port: int, n: int = 5) -> None:
    """A few full echoes through the chain (first-connection costs out of the figures)."""
    for i in range(n):
        with socket.create_connection(("127.0.0.1", socks_port), timeout=20) as s:
            s.sendall(socks_request(SINK_HOST, sink_port))
            reply = b""
            while len(reply) < 12:
                part = s.recv(12 - len(reply))
                if not part:
                    raise RuntimeError("warm-up: the proxy closed the connection")
                reply += part
            payload = bytes([i]) * ECHO_SIZE
            s.sendall(payload)
            got = b""
            while len(got) < ECHO_SIZE:
                part = s.recv(ECHO_SIZE - len(got))
                if not part:
                    raise RuntimeError("warm-up: closed before the echo")
                got += part
            if got != payload:
                raise RuntimeError("warm-up: wrong echo")


def _free_sink_port() -> int:
    with socket.socket() as s:
        s.bind((SINK_HOST, 0))
        return s.getsockname()[1]


def _child(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.hold", "--role", role, *args]


class Sampler:
    """Peak RSS of the two sides and the sinks' open connections."""

    def __init__(self, client: Proc, server: Proc, sink_files: list[Path]) -> None:
        self.client, self.server = client, server
        self.sink_files = sink_files
        self.client_peak = self.server_peak = 0
        self.sink_open = self.sink_peak = 0

    def sample(self) -> None:
        """One look at /proc and the sinks' status files."""
        self.client_peak = max(self.client_peak, rss_kb(side_pids(self.client)))
        self.server_peak = max(self.server_peak, rss_kb(side_pids(self.server)))
        states = [read_json(f) or {} for f in self.sink_files]
        self.sink_open = sum(s.get("open", 0) for s in states)
        self.sink_peak = max(self.sink_peak, self.sink_open)


def start_chain(group: ProcessGroup, impl: str, workers: int,
                name: str) -> tuple[Proc, Proc, int]:
    """The VMess chain's server and client, started at once (the client dials only when a
    connection comes); (client, server, SOCKS port) once both listen in every worker."""
    server_port, socks_port = free_port(), free_port()
    spath = group.write_config(f"{name}-server", configs.chain_server(
        "vmess", server_port, SECURITY, str(group.workdir / f"{name}-server-access.log")))
    cpath = group.write_config(f"{name}-client", configs.chain_client(
        "vmess", socks_port, server_port, SECURITY,
        str(group.workdir / f"{name}-client-access.log")))
    server = group.spawn(f"{name}-server", impl_argv(impl, spath, workers))
    client = group.spawn(f"{name}-client", impl_argv(impl, cpath, workers))
    for proc, port in ((server, server_port), (client, socks_port)):
        wait_port(port, proc.popen, timeout=60)
        wait_listeners(port, workers, proc.popen)
    return client, server, socks_port


def _tails(procs: list[Proc]) -> str:
    return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.log_tail()}" for p in procs)


def run_one(group: ProcessGroup, impl: str, conns: int, workers: int, hold: float,
            inflight: int, name: str) -> dict[str, Any]:
    """One implementation at ``conns`` held connections; its result row."""
    row: dict[str, Any] = {"name": name, "impl": impl, "conns": conns, "workers": workers}
    procs: list[Proc] = []
    chain: list[Proc] = []
    try:
        sink_port, warm_port = _free_sink_port(), _free_sink_port()
        nsinks = max(1, math.ceil(conns / PER_SINK))
        sink_files = [group.workdir / f"{name}-sink{i}.json" for i in range(nsinks)]
        for i, path in enumerate(sink_files):
            procs.append(group.spawn(f"{name}-sink{i}",
                                     _child("sink", "--port", str(sink_port), "--warm-port", str(warm_port), "--status",
                                            str(path))))
        wait_listeners(sink_port, nsinks, procs[0].popen)
        wait_listeners(warm_port, nsinks, procs[0].popen)
        client, server, socks_port = start_chain(group, impl, workers, name)
        chain = [client, server]
        _warm(socks_port, warm_port)
        before_client = rss_kb(side_pids(client))
        before_server = rss_kb(side_pids(server))
        cpu_before = client.cpu_seconds(), server.cpu_seconds()
        sampler = Sampler(client, server, sink_files)
        nloaders = max(2, math.ceil(conns / PER_LOADER))
        shares = [conns // nloaders + (1 if i < conns % nloaders else 0)
                  for i in range(nloaders)]
        load_files = [group.workdir / f"{name}-load{i}.json" for i in range(nloaders)]
        loaders = []
        started = time.monotonic()
        for i, (share, path) in enumerate(zip(shares, load_files, strict=True)):
            loaders.append(group.spawn(f"{name}-load{i}", _child(
                "load", "--socks-port", str(socks_port), "--port", str(sink_port),
                "--conns", str(share), "--inflight", str(max(1, inflight // nloaders)),
                "--status", str(path))))
        procs += loaders
        ramp_limit = 120 + conns / 20
        while True:
            sampler.sample()
            states = [read_json(p) for p in load_files]
            if all(states):
                break
            dead = [p.name for p in loaders if not p.alive()]
            if dead:
                raise RuntimeError(f"load process {dead[0]} died:\n"
                                   f"{group.workdir / (dead[0] + '.log')}")
            if time.monotonic() - started > ramp_limit:
                raise RuntimeError(f"connections not open after {ramp_limit:.0f} s")
            time.sleep(0.5)
        ramp = time.monotonic() - started
        hold_end = time.monotonic() + hold
        while time.monotonic() < hold_end:
            sampler.sample()
            time.sleep(min(0.5, max(0.0, hold_end - time.monotonic())))
        sampler.sample()
        held_at_sinks = sampler.sink_open
        fds = max(open_fds(side_pids(client))), max(open_fds(side_pids(server)))
        for proc in loaders:
            os.kill(proc.pid, signal.SIGUSR1)
        echo_limit = time.monotonic() + STEP_TIMEOUT + 30
        while True:
            sampler.sample()
            states = [read_json(p) for p in load_files]
            if all(s and s.get("done") for s in states):
                break
            if time.monotonic() > echo_limit:
                raise RuntimeError("the echoes did not finish")
            time.sleep(0.5)
        cpu_after = client.cpu_seconds(), server.cpu_seconds()
        failed: Counter[str] = Counter()
        for s in states:
            failed.update(s["failed"])  # type: ignore[index]
        established = sum(s["established"] for s in states)  # type: ignore[index]
        row.update({
            "established": established,
            "echoed": sum(s["echoed"] for s in states),  # type: ignore[index]
            "failed": sum(failed.values()), "why": dict(failed),
            "held_at_sinks": held_at_sinks, "sink_peak": sampler.sink_peak,
            "ramp_s": round(ramp, 1),
            "echo_s": round(max(s["echo_seconds"] for s in states), 1),  # type: ignore[index]
            "min_hold_s": round(min(s["min_hold"] for s in states), 1),  # type: ignore[index]
            "client_rss_mb": [round(before_client / 1024, 1),
                              round(sampler.client_peak / 1024, 1)],
            "server_rss_mb": [round(before_server / 1024, 1),
                              round(sampler.server_peak / 1024, 1)],
            "client_kib_per_conn": _per(sampler.client_peak - before_client, established),
            "server_kib_per_conn": _per(sampler.server_peak - before_server, established),
            "client_cpu_s": round(cpu_after[0] - cpu_before[0], 1),
            "server_cpu_s": round(cpu_after[1] - cpu_before[1], 1),
            "processes_per_side": len(side_pids(client)),
            "busiest_fds": list(fds),
        })
    except Exception as e:  # noqa: BLE001 - reported in the row, the next run goes on
        row["error"] = f"{type(e).__name__}: {e}"
        chain = [p for p in group.procs if p.name.startswith(f"{name}-")
                 and p.name.endswith(("-client", "-server"))]
        if chain:
            row["error"] += "\n" + _tails(chain)
    finally:
        for proc in procs + chain:
            group.stop(proc)
    return row


def _per(kib: int, conns: int) -> float:
    return round(kib / conns, 1) if conns else 0.0


def format_row(row: dict[str, Any]) -> str:
    """One result as a markdown table row."""
    label = f"{row['name']} ({row['processes_per_side'] if 'error' not in row else '?'} proc/side)"
    if "error" in row:
        return f"| {label} | {row['conns']} | error: {row['error'].splitlines()[0]} |"
    why = ", ".join(f"{k} {v}" for k, v in row["why"].items()) or "-"
    c, s = row["client_rss_mb"], row["server_rss_mb"]
    return (f"| {label} | {row['conns']} | {row['established']} | {row['held_at_sinks']} | "
            f"{row['echoed']} | {row['failed']} ({why}) | {c[0]:.0f} → {c[1]:.0f} | "
            f"{s[0]:.0f} → {s[1]:.0f} | {row['client_kib_per_conn']} / "
            f"{row['server_kib_per_conn']} | {row['client_cpu_s']} / {row['server_cpu_s']} | "
            f"{row['busiest_fds'][0]} / {row['busiest_fds'][1]} | {row['ramp_s']} |")


HEADER = ("| setup | asked | established | held at the sinks | echoed OK | failed | client RSS "
          "MB before → peak | server RSS MB before → peak | KiB per connection client / "
          "server | CPU s client / server | most fds in one process, client / server | "
          "ramp s |\n|---|---|---|---|---|---|---|---|---|---|---|---|")


def plan(conns: int, workers: int | None, only: str | None, cap: int) -> list[tuple]:
    """The runs: (impl, connections, workers, name)."""
    runs: list[tuple] = []
    if only in (None, "v2ray"):
        runs.append(("v2ray", min(conns, cap), 1, "v2ray"))
    if only in (None, "vtwist"):
        if conns > cap and only is None:
            runs.append(("vtwist", cap, 1, "vtwist"))
        n = workers or (1 if conns <= cap else math.ceil(conns / PER_WORKER))
        if conns > cap * n:
            print(f"note: {conns} connections need more than {n} workers under the "
                  f"hard limit (about {cap} each)", file=sys.stderr)
        if ("vtwist", conns, n) not in [r[:3] for r in runs]:
            runs.append(("vtwist", conns, n, f"vtwist-x{n}" if n > 1 else "vtwist"))
    return runs


def _die_with_parent() -> None:
    """A child (sink, load) gets SIGTERM when the controller dies, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The command line (the controller, or one ``--role`` child)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.hold",
                                description=__doc__.split("\n\n")[1])
    p.add_argument("--conns", type=int, default=20000)
    p.add_argument("--hold", type=float, default=30.0, help="seconds (default 30)")
    p.add_argument("--workers", type=int, default=None,
                   help="vtwist --workers per side (default: one per "
                        f"{PER_WORKER} connections above the single-process limit)")
    p.add_argument("--only", choices=("vtwist", "v2ray"))
    p.add_argument("--inflight", type=int, default=96,
                   help="SOCKS handshakes in flight at once, over all load processes")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--role", choices=("sink", "load"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--socks-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warm-port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--status", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        _die_with_parent()
    if args.role == "sink":
        asyncio.run(sink_main(args.port, args.warm_port, args.status))
        return 0
    if args.role == "load":
        asyncio.run(load_main(args.socks_port, args.port, args.conns, args.inflight,
                              args.status))
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM cleans up as Ctrl-C does
    hard = try_raise_hard(args.conns)
    cap = single_cap(hard)
    ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    span = int(ports[1]) - int(ports[0]) + 1
    print(f"hard RLIMIT_NOFILE {hard}: one relaying process holds about {cap} connections"
          f"{'' if args.conns <= cap else f' (V2Ray runs at {cap}, not {args.conns})'}; "
          f"ephemeral ports {span}; load average {os.getloadavg()[0]:.2f}", flush=True)
    if args.conns > span:
        print(f"warning: {args.conns} connections to one address need more than the "
              f"{span} ephemeral ports", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="hold-"))
    group = ProcessGroup(workdir)
    rows = []
    try:
        print(HEADER, flush=True)
        for impl, conns, workers, name in plan(args.conns, args.workers, args.only, cap):
            row = run_one(group, impl, conns, workers, args.hold, args.inflight, name)
            row["load_average"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(format_row(row), flush=True)
            if "error" in row and "\n" in row["error"]:
                print(row["error"], file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        group.close()
        if args.json:
            args.json.write_text(json.dumps({"hard_limit": hard, "single_cap": cap,
                                             "hold": args.hold, "rows": rows}, indent=1))
        if args.keep:
            print(f"work directory: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if rows and all("error" not in r and r["failed"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
