"""Suite ``mux`` (issue 16): Mux.Cool, vtwist<->vtwist beside V2Ray<->V2Ray, both with mux on.

``SOCKS5 -> VMess client (mux, concurrency 8) == shared connections == VMess server ->
freedom -> sink``, over plain tcp and over tcp+tls, with vtwist without mux beside them (and
with ``--baseline DIR``, that vtwist tree's mux chain as ``vtwist mux@base``):

- the set-up rate of 1,000 short connections (each a mux session on a shared connection);
- 8-stream throughput both ways (the eight streams share one mux connection).

Goals (issue 16): vtwist's mux set-up rate >= 1.5x V2Ray's with mux, and >= 3x vtwist's own
rate without mux over TLS; 8-stream throughput >= 1.0x V2Ray's with mux.
"""

from __future__ import annotations

import socket
from typing import Any

from benchmarks import configs, metrics
from benchmarks.core import MB, Context, Group, baseline
from benchmarks.procs import ProcessGroup, free_port, wait_port
from benchmarks.setups import Chain, impl_argv

SECURITY = "aes-128-gcm"
CONCURRENCY = 8


class MuxChain(Chain):
    """A VMess :class:`Chain` whose client outbound has ``mux`` on."""

    def __init__(self, impl: str, variant: str, client_stream: dict[str, Any] | None = None,
                 server_stream: dict[str, Any] | None = None, name: str | None = None,
                 concurrency: int = CONCURRENCY, env: dict[str, str] | None = None) -> None:
        super().__init__(impl, SECURITY, variant, client_stream, server_stream, name=name,
                         env=env)
        self.concurrency = concurrency

    def start(self, group: ProcessGroup) -> None:
        """The server, then the client with ``mux`` on its outbound."""
        server_port = free_port(socket.SOCK_STREAM)
        tag = f"{self.variant}-{self.tag}"
        spath = group.write_config(f"{tag}-server", configs.chain_server(
            "vmess", server_port, self.security,
            str(group.workdir / f"{tag}-server-access.log"), self.server_stream))
        server = group.spawn(f"{tag}-server", impl_argv(self.family, spath), env=self.env)
        self.procs = [server]
        wait_port(server_port, server.popen)
        self.socks_port = free_port()
        client_config = configs.chain_client(
            "vmess", self.socks_port, server_port, self.security,
            str(group.workdir / f"{tag}-client-access.log"), self.client_stream)
        client_config["outbounds"][0]["mux"] = {"enabled": True,
                                                "concurrency": self.concurrency}
        cpath = group.write_config(f"{tag}-client", client_config)
        client = group.spawn(f"{tag}-client", impl_argv(self.family, cpath), env=self.env)
        self.procs = [client, server]
        wait_port(self.socks_port, client.popen)


def groups(ctx: Context) -> list[Group]:
    """Plain tcp and tcp+tls, each: vtwist mux, V2Ray mux, vtwist without mux."""
    from benchmarks.tls import make_server_cert

    cert, key = make_server_cert(ctx.workdir)
    total = (4 if ctx.quick else 128) * MB
    count = 40 if ctx.quick else 1000
    result = []
    for network, (client, server) in (
            ("tcp", (None, None)),
            ("tls", (configs.tls_stream("tcp", False, cert, key),
                     configs.tls_stream("tcp", True, cert, key)))):
        variant = f"mux-{network}"
        setups = [MuxChain("vtwist", variant, client, server, name="vtwist mux"),
                  MuxChain("v2ray", variant, client, server, name="v2ray mux"),
                  *baseline(ctx, lambda env, v=variant, c=client, s=server: MuxChain(
                      "vtwist", f"{v}-base", c, s, name="vtwist mux@base", env=env)),
                  Chain("vtwist", SECURITY, f"nomux-{network}", client, server,
                        name="vtwist no mux")]
        result.append(Group(
            "mux", f"SOCKS5 -> VMess ({SECURITY}, mux concurrency {CONCURRENCY}) over "
                   f"{network} -> VMess -> freedom; {count} short connections, "
                   f"{total // MB} MB over 8 streams",
            setups,
            [metrics.conn_rate(count),
             metrics.throughput("down", 8, total, ctx.verify),
             metrics.throughput("up", 8, total, ctx.verify)],
            ["goals: set-up rate >= 1.5x V2Ray mux, and >= 3x vtwist without mux over tls; "
             "8-stream throughput >= 1.0x V2Ray mux"]))
    return result
