"""Suite ``chain`` (issues 3, 13): SOCKS5 -> VMess, Shadowsocks, Trojan or VLESS client ═ TCP ═ server ->
freedom -> sink."""

from __future__ import annotations

from benchmarks import metrics
from benchmarks.core import MB, Context, Group, Metric, baseline
from benchmarks.setups import Chain


def chain_metrics(ctx: Context, total: int, stream_counts: tuple[int, ...]) -> list[Metric]:
    """Throughput both ways per stream count, set-up rate, 1 KB echo p50/p99."""
    result = []
    for n in stream_counts:
        result.append(metrics.throughput("down", n, total, ctx.verify))
        result.append(metrics.throughput("up", n, total, ctx.verify))
    result.append(metrics.conn_rate(40 if ctx.quick else 1000))
    echoes = 50 if ctx.quick else 1000
    result.append(metrics.echo(echoes))
    return result


def groups(ctx: Context) -> list[Group]:
    """vtwist<->vtwist beside V2Ray<->V2Ray: VMess aes-128-gcm and none, Shadowsocks
    aes-128-gcm, Trojan and VLESS over tls."""
    total = (4 if ctx.quick else 128) * MB
    counts = (1, 8) if ctx.quick else (1, 8, 64)
    result = []
    for security in ("aes-128-gcm", "none"):
        result.append(Group(
            "chain", f"SOCKS5 -> VMess/TCP ({security}) -> VMess -> freedom, "
                     f"{total // MB} MB each way",
            [Chain("vtwist", security, f"vmess-{security}"),
             *baseline(ctx, lambda env, s=security: Chain(  # type: ignore[misc]
                 "vtwist", s, f"vmess-{s}", name="vtwist@base", env=env)),
             Chain("v2ray", security, f"vmess-{security}")],
            chain_metrics(ctx, total, counts),
            ["target: single-stream throughput >= 0.5x V2Ray"]))
    method = "aes-128-gcm"
    result.append(Group(
        "chain", f"SOCKS5 -> Shadowsocks/TCP ({method}) -> Shadowsocks -> freedom, "
                 f"{total // MB} MB each way",
        [Chain("vtwist", method, f"shadowsocks-{method}", protocol="shadowsocks"),
         *baseline(ctx, lambda env: Chain(  # type: ignore[misc]
             "vtwist", method, f"shadowsocks-{method}", name="vtwist@base", env=env,
             protocol="shadowsocks")),
         Chain("v2ray", method, f"shadowsocks-{method}", protocol="shadowsocks")],
        chain_metrics(ctx, total, counts),
        ["target: single-stream throughput >= 1.0x V2Ray"]))
    result.append(trojan_group(ctx, total, counts))
    result.append(vless_group(ctx, total, counts))
    return result


def trojan_group(ctx: Context, total: int, counts: tuple[int, ...]) -> Group:
    """Trojan over tcp+tls (a throwaway certificate in the work directory)."""
    from benchmarks.configs import tls_stream
    from benchmarks.tls import make_server_cert

    cert, key = make_server_cert(ctx.workdir)
    client, server = tls_stream("tcp", False, cert, key), tls_stream("tcp", True, cert, key)

    def chain(impl: str, **kw: object) -> Chain:
        return Chain(impl, "tls", "trojan-tls", client, server, protocol="trojan",
                     **kw)  # type: ignore[arg-type]

    return Group(
        "chain", f"SOCKS5 -> Trojan/tls -> Trojan -> freedom, {total // MB} MB each way",
        [chain("vtwist"),
         *baseline(ctx, lambda env: chain("vtwist", name="vtwist@base", env=env)),
         chain("v2ray")],
        chain_metrics(ctx, total, counts),
        ["target: single-stream throughput >= 1.0x V2Ray"])


def vless_group(ctx: Context, total: int, counts: tuple[int, ...]) -> Group:
    """VLESS over tcp+tls (a throwaway certificate in the work directory)."""
    from benchmarks.configs import tls_stream
    from benchmarks.tls import make_server_cert

    cert, key = make_server_cert(ctx.workdir)
    client, server = tls_stream("tcp", False, cert, key), tls_stream("tcp", True, cert, key)

    def chain(impl: str, **kw: object) -> Chain:
        return Chain(impl, "tls", "vless-tls", client, server, protocol="vless",
                     **kw)  # type: ignore[arg-type]

    return Group(
        "chain", f"SOCKS5 -> VLESS/tls -> VLESS -> freedom, {total // MB} MB each way",
        [chain("vtwist"),
         *baseline(ctx, lambda env: chain("vtwist", name="vtwist@base", env=env)),
         chain("v2ray")],
        chain_metrics(ctx, total, counts),
        ["target: single-stream throughput >= 1.0x V2Ray"])
