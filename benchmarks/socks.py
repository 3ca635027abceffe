"""Suite ``socks`` (issue 2): SOCKS5 -> freedom, vtwist vs pproxy vs V2Ray."""

from __future__ import annotations

from benchmarks import metrics
from benchmarks.core import MB, Context, Group, baseline
from benchmarks.setups import PProxy, SocksProxy


def groups(ctx: Context) -> list[Group]:
    """One comparison: three single-process proxies on the same metrics."""
    total = (4 if ctx.quick else 256) * MB
    conns = 50 if ctx.quick else 2000
    return [Group(
        "socks", f"SOCKS5 -> freedom, {total // MB} MB each way",
        [SocksProxy("vtwist"), *baseline(ctx, lambda env: SocksProxy("vtwist", "vtwist@base", env)),
         PProxy(), SocksProxy("v2ray")],
        [metrics.throughput("up", 1, total, ctx.verify),
         metrics.throughput("down", 1, total, ctx.verify),
         metrics.throughput("up", 16, total, ctx.verify),
         metrics.throughput("down", 16, total, ctx.verify),
         metrics.conn_rate(conns)],
        ["target: vtwist >= 1.5x pproxy"])]
