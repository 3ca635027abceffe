"""Suite ``workers`` (issue 17, lever 4): vtwist with ``--workers 2`` beside one vtwist process
and V2Ray (which uses every core by itself), where a second core can help: the VMess
aes-128-gcm chain (2 workers on both sides) on 8 and 64 parallel streams and connections/s,
and the single SOCKS5 -> freedom hop on 16 streams and connections/s.

CPU s/GB counts the supervisor and its workers; peak RSS is the largest single process.
"""

from __future__ import annotations

from benchmarks import metrics
from benchmarks.core import MB, Context, Group
from benchmarks.setups import Chain, SocksProxy

WORKERS = 2


def groups(ctx: Context) -> list[Group]:
    """vtwist x2 (the subject of the ratios), vtwist x1, V2Ray."""
    total = (4 if ctx.quick else 128) * MB
    counts = (8,) if ctx.quick else (8, 64)
    measured = []
    for n in counts:
        measured.append(metrics.throughput("down", n, total, ctx.verify))
        measured.append(metrics.throughput("up", n, total, ctx.verify))
    measured.append(metrics.conn_rate(40 if ctx.quick else 1000))
    security = "aes-128-gcm"
    return [Group(
        "workers", f"SOCKS5 -> VMess/TCP ({security}) -> VMess -> freedom, "
                   f"{total // MB} MB each way, vtwist with --workers {WORKERS} per side",
        [Chain("vtwist", security, f"vmess-{security}", name=f"vtwist-x{WORKERS}",
               workers=WORKERS),
         Chain("vtwist", security, f"vmess-{security}"),
         Chain("v2ray", security, f"vmess-{security}")],
        measured,
        ["targets: 64 streams >= 1.0x V2Ray; connections/s >= 1.5x V2Ray"]),
        Group("workers", f"SOCKS5 -> freedom, {total // MB} MB each way, vtwist with "
                         f"--workers {WORKERS}",
              [SocksProxy("vtwist", f"vtwist-x{WORKERS}", workers=WORKERS),
               SocksProxy("vtwist"), SocksProxy("v2ray")],
              [metrics.throughput("down", 16, total, ctx.verify),
               metrics.conn_rate(50 if ctx.quick else 2000)])]
