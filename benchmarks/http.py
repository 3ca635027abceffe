"""Suite ``http`` (issue 12): HTTP CONNECT -> freedom, vtwist vs V2Ray vs pproxy."""

from __future__ import annotations

from benchmarks import metrics
from benchmarks.core import MB, Context, Group, baseline
from benchmarks.setups import HttpProxy, PProxy


def groups(ctx: Context) -> list[Group]:
    """One comparison: three single-process HTTP proxies, the load entering by CONNECT."""
    total = (4 if ctx.quick else 256) * MB
    conns = 50 if ctx.quick else 2000
    return [Group(
        "http", f"HTTP CONNECT -> freedom, {total // MB} MB each way",
        [HttpProxy("vtwist"), *baseline(ctx, lambda env: HttpProxy("vtwist", "vtwist@base", env)),
         HttpProxy("v2ray"), PProxy("http")],
        [metrics.throughput("up", 1, total, ctx.verify),
         metrics.throughput("down", 1, total, ctx.verify),
         metrics.throughput("up", 16, total, ctx.verify),
         metrics.throughput("down", 16, total, ctx.verify),
         metrics.conn_rate(conns)],
        ["target: vtwist >= 1.0x V2Ray and >= 2x pproxy on one stream; "
         "connections/s >= 1.0x V2Ray"])]
