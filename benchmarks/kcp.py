"""Suite ``kcp`` (issue 4): VMess over mKCP, vtwist<->vtwist vs V2Ray<->V2Ray, same kcpSettings.

Two parts:

* on plain loopback (no relay), V2Ray's defaults: 1 KiB echo p50/p99, single-stream
  download, and whether 64 parallel downloads over one mKCP port all complete;
* through the userspace UDP impairment relay (:mod:`benchmarks.relay`, a process of its
  own) with 20 ms one-way delay and 0 %, 1 %, 5 % loss: goodput both ways, and CPU seconds
  per MB of the two proxy processes.

``VTWIST_BENCH_KCP`` picks parts while developing: a comma list of ``loopback`` and loss
rates in percent, e.g. ``VTWIST_BENCH_KCP=5`` or ``VTWIST_BENCH_KCP=0,1,5`` (default: all).
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from benchmarks import metrics
from benchmarks.configs import kcp_stream
from benchmarks.core import MB, Context, Group, Metric, Outcome, Output, baseline
from benchmarks.loadgen import Target, parallel_complete
from benchmarks.procs import Proc, ProcessGroup, free_port
from benchmarks.setups import Chain

SECURITY = "aes-128-gcm"
DEFAULTS: dict[str, Any] = {}
# Same for both implementations: V2Ray's defaults with 20 MB/s each way, so the 5 MB/s default
# uplink is not what limits goodput.
LOSSY: dict[str, Any] = {"uplinkCapacity": 20, "downlinkCapacity": 20}
DELAY_MS = 20


def parallel_streams(streams: int, per_stream: int, timeout: float) -> Metric:
    """How many of ``streams`` parallel downloads finish within ``timeout`` s, and how fast."""

    def run(target: Target) -> Outcome:
        done, seconds = parallel_complete(target, streams, per_stream, timeout)
        return Outcome(float(done), {f"par{streams}_s": seconds})

    return Metric(f"par{streams}", f"{streams} x {per_stream // 1024} KiB in parallel, done",
                  f"of {streams}", run,
                  also=[Output(f"par{streams}_s", "  time for all of them", "s", False)])


def relay_middle(loss: float, delay_ms: int, seed: int = 1):
    """A ``Chain`` middle: starts the impairment relay in front of the server's UDP port."""

    def start(group: ProcessGroup, server_port: int) -> tuple[Proc | None, int]:
        port = free_port(socket.SOCK_DGRAM)
        proc = group.spawn(f"relay-{server_port}", [
            sys.executable, "-m", "benchmarks.relay", "--listen", str(port),
            "--to", str(server_port), "--loss", str(loss), "--delay", str(delay_ms / 1000),
            "--seed", str(seed)])
        deadline = time.monotonic() + 30
        while "relay listening" not in proc.log_tail(5):
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError("the impairment relay did not start:\n" + proc.log_tail())
            time.sleep(0.05)
        return proc, port

    return start


def parts(ctx: Context) -> tuple[bool, tuple[float, ...]]:
    """Whether to run the loopback group, and the loss rates (``VTWIST_BENCH_KCP``)."""
    losses = (0.0, 5.0) if ctx.quick else (0.0, 1.0, 5.0)
    chosen = os.environ.get("VTWIST_BENCH_KCP", "").strip()
    if not chosen:
        return True, losses
    names = [x.strip() for x in chosen.split(",") if x.strip()]
    return "loopback" in names, tuple(float(x) for x in names if x != "loopback")


def groups(ctx: Context) -> list[Group]:
    """Loopback comparison, then one comparison per loss rate."""
    loopback, losses = parts(ctx)
    direct_size = (2 if ctx.quick else 32) * MB
    lossy_size = (1 if ctx.quick else 16) * MB
    echoes = 50 if ctx.quick else 500
    plain = kcp_stream(**DEFAULTS)
    result = [] if not loopback else [Group(
        "kcp", "SOCKS5 -> VMess over mKCP (V2Ray defaults, header none) on loopback",
        [Chain("vtwist", SECURITY, "kcp-plain", plain, plain, server_tcp=False),
         *baseline(ctx, lambda env: Chain(  # type: ignore[misc]
             "vtwist", SECURITY, "kcp-plain", plain, plain, server_tcp=False,
             name="vtwist@base", env=env)),
         Chain("v2ray", SECURITY, "kcp-plain", plain, plain, server_tcp=False)],
        [metrics.echo(echoes),
         metrics.throughput("down", 1, direct_size, ctx.verify),
         parallel_streams(8 if ctx.quick else 64, (64 if ctx.quick else 4096) * 1024,
                          20 if ctx.quick else 90)],
        ["targets: 1 KiB echo p50 < 10 ms (V2Ray ~100 ms); 64 parallel streams complete"])]
    lossy = kcp_stream(**LOSSY)
    for loss in losses:
        result.append(Group(
            "kcp", f"mKCP through the impairment relay: {loss:g}% loss, {DELAY_MS} ms one-way, "
                   f"{lossy_size // MB} MB each way, kcpSettings {LOSSY}",
            [Chain("vtwist", SECURITY, f"kcp-loss{loss:g}", lossy, lossy,
                   middle=relay_middle(loss / 100, DELAY_MS), server_tcp=False),
             *baseline(ctx, lambda env, loss=loss: Chain(  # type: ignore[misc]
                 "vtwist", SECURITY, f"kcp-loss{loss:g}", lossy, lossy,
                 middle=relay_middle(loss / 100, DELAY_MS), server_tcp=False,
                 name="vtwist@base", env=env)),
             Chain("v2ray", SECURITY, f"kcp-loss{loss:g}", lossy, lossy,
                   middle=relay_middle(loss / 100, DELAY_MS), server_tcp=False)],
            [metrics.throughput("down", 1, lossy_size, ctx.verify),
             metrics.throughput("up", 1, lossy_size, ctx.verify)],
            ["target at 5% loss: vtwist goodput >= 2.5x V2Ray's (issue 17)"]))
    return result

