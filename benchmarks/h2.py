"""Suite ``h2`` (issue 15): VMess over HTTP/2 (``network: "h2"``, TLS with ALPN h2) beside
V2Ray 4.34, and over gRPC gun (vtwist only: V2Ray 4.34 has no gRPC). The ``tls`` suite runs
these groups too; ``python -m benchmarks h2`` runs only them."""

from __future__ import annotations

from typing import Any

from benchmarks.configs import tls_stream
from benchmarks.core import MB, Context, Group
from benchmarks.setups import Chain
from benchmarks.tls import make_server_cert, transport_group

SECURITY = "aes-128-gcm"


def _stream(network: str, server: bool, cert: str, key: str) -> dict[str, Any]:
    stream = tls_stream("tcp", server, cert, key)
    stream["network"] = network
    if network == "h2":
        stream["httpSettings"] = {"host": ["localhost"], "path": "/vtb"}
    else:
        stream["grpcSettings"] = {"serviceName": "vtb"}
    return stream


def h2_groups(ctx: Context, total: int, cert: str, key: str) -> list[Group]:
    """h2+tls (vtwist beside V2Ray) and grpc+tls (vtwist alone)."""
    out = []
    for network, impls in (("h2", ("vtwist", "v2ray")), ("grpc", ("vtwist",))):
        setups = [Chain(impl, SECURITY, f"vmess-{network}-tls",
                        _stream(network, False, cert, key), _stream(network, True, cert, key))
                  for impl in impls]
        out.append(transport_group(
            ctx, f"{network}+tls", total, setups,
            "target: h2 throughput >= 1.0x V2Ray (issue 15)" if network == "h2"
            else "V2Ray 4.34 has no gRPC transport: vtwist alone"))
    return out


def groups(ctx: Context) -> list[Group]:
    """Only the HTTP/2 and gRPC comparisons."""
    cert, key = make_server_cert(ctx.workdir)
    return h2_groups(ctx, (4 if ctx.quick else 128) * MB, cert, key)
