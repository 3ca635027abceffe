"""Suite ``tls`` (issue 5): VMess over ws+tls and over tcp+tls, vtwist<->vtwist vs V2Ray<->V2Ray."""

from __future__ import annotations

from pathlib import Path

from benchmarks import metrics
from benchmarks.configs import tls_stream
from benchmarks.core import MB, Context, Group
from benchmarks.setups import Chain
from vtwist.genconfig import (
    certificate_builder,
    generate_key,
    private_key_pem,
    server_certificate_builder,
)

SECURITY = "aes-128-gcm"


def make_server_cert(directory: Path) -> tuple[str, str]:
    """Write ``server.pem`` (a ``localhost`` leaf, then its throwaway CA) and ``server.key``
    into ``directory``; returns their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_key = generate_key()
    ca = (certificate_builder("vtwist bench CA", ca_key.public_key(), 30)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = generate_key()
    leaf = (server_certificate_builder(["localhost", "127.0.0.1"], key.public_key(), 30,
                                       issuer=ca.subject)
            .sign(ca_key, hashes.SHA256()))
    cert_path = directory / "server.pem"
    key_path = directory / "server.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM)
                          + ca.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(private_key_pem(key))
    return str(cert_path), str(key_path)


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
        result.append(transport_group(ctx, f"{network}+tls", total, setups,
                                      "target: single-stream throughput >= 0.5x V2Ray"))
    result.append(quic_group(ctx, total))
    from benchmarks.h2 import h2_groups

    result.extend(h2_groups(ctx, total, cert, key))
    return result


def quic_group(ctx: Context, total: int) -> Group:
    """VMess over QUIC (V2Ray's internal TLS, no packet obfuscation), one QUIC stream per
    proxied connection; the server listens on UDP."""
    stream = {"network": "quic", "quicSettings": {}}
    setups = [Chain(impl, SECURITY, "vmess-quic", stream, stream, server_tcp=False)
              for impl in ("vtwist", "v2ray")]
    return transport_group(ctx, "quic", total, setups,
                           "target: throughput >= 1.0x V2Ray (issue 15)")


def transport_group(ctx: Context, over: str, total: int, setups: list[Chain],
                    note: str) -> Group:
    """SOCKS5 -> VMess over ``over`` -> VMess -> freedom: ``total`` bytes down and up on one
    stream, down on 8, the connection rate and the echo latency."""
    return Group(
        "tls", f"SOCKS5 -> VMess ({SECURITY}) over {over} -> VMess -> freedom, "
               f"{total // MB} MB each way",
        setups,
        [metrics.throughput("down", 1, total, ctx.verify),
         metrics.throughput("up", 1, total, ctx.verify),
         metrics.throughput("down", 8, total, ctx.verify),
         metrics.conn_rate(40 if ctx.quick else 500),
         metrics.echo(50 if ctx.quick else 1000)],
        [note])
