"""Suite ``handshake`` (issue 15): connection set-up over tcp+tls and ws+tls, with and without
TLS session resumption, vtwist beside V2Ray.

vtwist resumes by default (session tickets on the server, the last session offered by the
client); V2Ray 4.34 only with ``enableSessionResumption: true``. Each side is measured both
ways, so the figures say what resumption buys and how the defaults compare.
"""

from __future__ import annotations

import copy

from benchmarks import metrics
from benchmarks.configs import tls_stream
from benchmarks.core import Context, Group, baseline
from benchmarks.setups import Chain
from benchmarks.tls import SECURITY, make_server_cert


def with_resumption(stream: dict, enabled: bool) -> dict:
    """``stream`` with ``tlsSettings.enableSessionResumption`` set."""
    stream = copy.deepcopy(stream)
    stream["tlsSettings"]["enableSessionResumption"] = enabled
    return stream


def groups(ctx: Context) -> list[Group]:
    """Connections per second over tcp+tls and ws+tls, each stack with resumption on and off."""
    cert, key = make_server_cert(ctx.workdir)
    result = []
    for network in ("tcp", "ws"):
        client = tls_stream(network, False, cert, key)
        server = tls_stream(network, True, cert, key)
        variant = f"vmess-{network}-tls"
        setups = []
        for impl in ("vtwist", "v2ray"):
            for enabled in (True, False):
                name = f"{impl}{'' if enabled else '@full'}" if impl == "vtwist" else \
                    f"{impl}{'@resume' if enabled else ''}"
                setups.append(Chain(impl, SECURITY, variant, with_resumption(client, enabled),
                                    with_resumption(server, enabled), name=name))
        setups.extend(baseline(ctx, lambda env, c=client, s=server, v=variant: Chain(
            "vtwist", SECURITY, v, c, s, name="vtwist@base", env=env)))
        result.append(Group(
            "handshake", f"SOCKS5 -> VMess ({SECURITY}) over {network}+tls: connection set-up, "
                         "TLS resumption on (vtwist, v2ray@resume) and off (vtwist@full, v2ray)",
            setups,
            [metrics.conn_rate(40 if ctx.quick else 500), metrics.echo(50 if ctx.quick else 500)],
            ["target: vtwist (resuming) >= 1.0x V2Ray's connections/s"]))
    return result
