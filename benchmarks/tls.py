"""Suite ``tls`` (issue 5): VMess over ws+tls and over tcp+tls, vtwist<->vtwist vs V2Ray<->V2Ray."""

from __future__ import annotations

from benchmarks import metrics
from benchmarks.certs import make_server_cert
from benchmarks.configs import tls_stream
from benchmarks.core import MB, Context, Group
from benchmarks.setups import Chain

SECURITY = "aes-128-gcm"


def groups(ctx: Context) -> list[Group]:
    """One comparison per transport stack."""
    cert, key = make_server_cert(ctx.workdir)
    total = (4 if ctx.quick else 128) * MB
    result = []
    for network in ("ws", "tcp"):
        client = tls_stream(network, False, cert, key)
        server = tls_stream(network, True, cert, key)
        variant = f"vmess-{network}-tls"
        setups = [Chain(impl, SECURITY, variant, client, server) for impl in ("vtwist", "v2ray")]
        echoes = 50 if ctx.quick else 1000
        result.append(Group(
            "tls", f"SOCKS5 -> VMess ({SECURITY}) over {network}+tls -> VMess -> freedom, "
                   f"{total // MB} MB each way",
            setups,
            [metrics.throughput("down", 1, total, ctx.verify),
             metrics.throughput("up", 1, total, ctx.verify),
             metrics.throughput("down", 8, total, ctx.verify),
             metrics.conn_rate(40 if ctx.quick else 500),
             metrics.echo(echoes)],
            ["target: single-stream throughput >= 0.5x V2Ray"]))
    return result
