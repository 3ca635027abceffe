"""Suite ``workers`` (issue 17, lever 4): the VMess aes-128-gcm chain with ``--workers 2`` on
both vtwist sides, beside one vtwist process per side and V2Ray (which uses every core by
itself): 8 and 64 parallel streams and connections/s, where a second core can help.

CPU s/GB counts the supervisor and its workers; peak RSS is the largest single process.
"""

from __future__ import annotations

from benchmarks import metrics
from benchmarks.core import MB, Context, Group
from benchmarks.setups import Chain

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
        ["targets: 64 streams >= 1.0x V2Ray; connections/s >= 1.5x V2Ray"])]
