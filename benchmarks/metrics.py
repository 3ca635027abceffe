"""Metric builders shared by the suites."""

from __future__ import annotations

import statistics

from benchmarks.core import MB, Metric, Outcome, Output
from benchmarks.loadgen import Target, connect_rate, echo_latency, transfer


def throughput(direction: str, streams: int, total: int, verify: bool) -> Metric:
    """MB/s moving ``total`` bytes over ``streams`` parallel streams (``up`` or ``down``)."""
    word = "upload" if direction == "up" else "download"

    def run(target: Target) -> float:
        return total / MB / transfer(target, direction, total, streams, verify)

    plural = "stream" if streams == 1 else "streams"
    return Metric(f"{direction}{streams}", f"{word}, {streams} {plural}", "MB/s", run,
                  moved=total)


def conn_rate(count: int, workers: int = 8, timeout: float = 5.0) -> Metric:
    """Full connections per second (SOCKS5 handshake, request, 1-byte answer, close).

    A connection that fails or stalls past ``timeout`` s is counted in a note, not fatal
    (V2Ray's probabilistic VMess replay filter refuses about 1 in 2000 valid connections).
    """

    def run(target: Target) -> Outcome:
        rate, times, failed = connect_rate(target, count, workers, timeout)
        ok = sorted(times)
        extra = {"setup_p50": statistics.median(ok) * 1000} if ok else {}
        note = f"{failed} of {count} connections failed or stalled > {timeout:g} s" \
            if failed else ""
        return Outcome(rate, extra, note)

    return Metric("cps", f"connections/s ({workers} workers)", "conn/s", run,
                  also=[Output("setup_p50", "  connection time p50", "ms", False)])


def _quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def echo(count: int, size: int = 1024) -> Metric:
    """Round-trip times of ``size``-byte echoes on one connection: p50 and p99, in ms."""

    def run(target: Target) -> Outcome:
        times = sorted(echo_latency(target, count, size))
        return Outcome(statistics.median(times) * 1000,
                       {"echo_p99": _quantile(times, 0.99) * 1000})

    label = f"{size // 1024} KB echo" if size >= 1024 else f"{size} B echo"
    return Metric("echo_p50", f"{label} p50", "ms", run, higher_better=False,
                  also=[Output("echo_p99", f"{label} p99", "ms", False)])
