"""Metric builders shared by the suites."""

from __future__ import annotations

import statistics

from benchmarks.core import MB, Metric
from benchmarks.loadgen import Target, connect_rate, echo_latency, transfer


def throughput(direction: str, streams: int, total: int, verify: bool) -> Metric:
    """MB/s moving ``total`` bytes over ``streams`` parallel streams (``up`` or ``down``)."""
    word = "upload" if direction == "up" else "download"

    def run(target: Target) -> float:
        return total / MB / transfer(target, direction, total, streams, verify)

    plural = "stream" if streams == 1 else "streams"
    return Metric(f"{direction}{streams}", f"{word}, {streams} {plural}", "MB/s", run,
                  moved=total)


def conn_rate(count: int, workers: int = 8) -> Metric:
    """Full connections per second (SOCKS5 handshake, request, 1-byte answer, close)."""

    def run(target: Target) -> float:
        return connect_rate(target, count, workers)[0]

    return Metric("cps", f"connections/s ({workers} workers)", "conn/s", run)


def echo(count: int, quantile: float, size: int = 1024) -> Metric:
    """Round-trip time of ``size``-byte echoes, at ``quantile`` (0.5, 0.99), in ms."""

    def run(target: Target) -> float:
        times = sorted(echo_latency(target, count, size))
        if quantile == 0.5:
            return statistics.median(times) * 1000
        return times[min(len(times) - 1, int(quantile * len(times)))] * 1000

    name = f"p{int(quantile * 100)}"
    return Metric(f"echo_{name}", f"{size // 1024} KB echo {name}", "ms", run,
                  higher_better=False)
