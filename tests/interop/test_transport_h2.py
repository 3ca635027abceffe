"""VMess (aes-128-gcm) over HTTP/2 (``network: "http"``) and gRPC gun (``"grpc"``).

Each pairing runs ``SOCKS inbound -> VMess outbound ═ transport ═ VMess inbound -> freedom ->
echo`` with the same V2Ray-format configs for vtwist and V2Ray 4.34: 20 MB each way with
sha256, a UDP echo through the SOCKS inbound's UDP ASSOCIATE, and 8 streams at once (which
share the client's pooled HTTP/2 connection).

* http over TLS (ALPN h2): every pairing with V2Ray 4.34;
* http without TLS (h2c): vtwist's client to V2Ray 4.34's server (which accepts h2c; its
  client refuses to dial without TLS) and vtwist to vtwist;
* grpc, gun and multi mode, with and without TLS: vtwist to vtwist (V2Ray 4.34 has no gRPC).
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task

from tests.h2_support import clean_h2
from tests.interop.transport_support import SERVER_NAME, TransportTestCase
from tests.interop.v2ray_runner import EchoServer
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port
from tests.services import start_service

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
SECURITY = "aes-128-gcm"
SIZE = 20 * 1024 * 1024
ALL_PAIRS = (("vtwist", "v2ray"), ("v2ray", "vtwist"), ("vtwist", "vtwist"))

#: flavour -> (network settings, TLS?, pairings)
FLAVOURS: dict[str, tuple[dict[str, Any], bool, tuple[tuple[str, str], ...]]] = {
    "h2_tls": ({"network": "http",
                "httpSettings": {"host": [SERVER_NAME, "other.test"], "path": "/tunnel"}},
               True, ALL_PAIRS),
    "h2c": ({"network": "h2", "httpSettings": {"host": SERVER_NAME, "path": "/h2c"}},
            False, (("vtwist", "v2ray"), ("vtwist", "vtwist"))),
    "grpc_tls": ({"network": "grpc", "grpcSettings": {"serviceName": "vtwist.Tunnel"}},
                 True, (("vtwist", "vtwist"),)),
    "grpc": ({"network": "gun", "grpcSettings": {"serviceName": "svc"}},
             False, (("vtwist", "vtwist"),)),
    "grpc_multi_tls": ({"network": "grpc",
                        "grpcSettings": {"serviceName": "svc", "multiMode": True}},
                       True, (("vtwist", "vtwist"),)),
    "grpc_multi": ({"network": "grpc",
                    "grpcSettings": {"serviceName": "/custom/path/Tun|Multi",
                                     "multiMode": True}},
                   False, (("vtwist", "vtwist"),)),
}


def server_config(port: int, stream: dict[str, Any]) -> dict[str, Any]:
    """VMess inbound -> freedom."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "vmess",
                      "settings": {"clients": [{"id": UUID, "alterId": 0}]},
                      "streamSettings": stream}],
        "outbounds": [{"protocol": "freedom"}],
    }


def client_config(socks: int, server_port: int, stream: dict[str, Any]) -> dict[str, Any]:
    """SOCKS inbound (with UDP) -> VMess outbound."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"listen": "127.0.0.1", "port": socks, "protocol": "socks",
                      "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}}],
        "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
            "address": "127.0.0.1", "port": server_port,
            "users": [{"id": UUID, "alterId": 0, "security": SECURITY}]}]},
            "streamSettings": stream}],
    }


class HTTP2Interop(TransportTestCase):
    """The pairings over each flavour."""

    timeout = 300
    echo: EchoServer

    def setUp(self) -> None:
        super().setUp()
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()
        clean_h2(self)

    def stream(self, flavour: str, inbound: bool) -> dict[str, Any]:
        """streamSettings for a flavour (a copy)."""
        network, tls, _ = FLAVOURS[flavour]
        out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v)
                               for k, v in network.items()}
        if tls:
            out["security"] = "tls"
            out["tlsSettings"] = self.fx.tls_server() if inbound else self.fx.tls_client()
        return out

    async def start_server(self, who: str, flavour: str) -> int:
        port = free_port()
        config = server_config(port, self.stream(flavour, True))
        if who == "vtwist":
            await start_service(config, self)
        else:
            await self.v2ray(config).wait_port(port)
        return port

    async def start_client(self, who: str, flavour: str, server_port: int) -> int:
        socks = free_port(udp_too=True)
        config = client_config(socks, server_port, self.stream(flavour, False))
        if who == "vtwist":
            await start_service(config, self)
        else:
            await self.v2ray(config).wait_port(socks)
        return socks

    async def run_pair(self, flavour: str, client: str, server: str) -> None:
        server_port = await self.start_server(server, flavour)
        socks = await self.start_client(client, flavour, server_port)
        sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", self.echo.port, SIZE,
                                        timeout=240)
        self.assertEqual(got, sent, "20 MB echo differs")
        payloads = [os.urandom(n) for n in (1, 100, 1024, 1400)]
        echoed = await socks_udp_echo(reactor, socks, "127.0.0.1", self.echo.port, payloads)
        self.assertEqual(echoed, payloads)
        results = await defer.gatherResults([
            defer.ensureDeferred(socks_echo(reactor, socks, "127.0.0.1", self.echo.port,
                                            2 * 1024 * 1024, timeout=240))
            for _ in range(8)])
        for sent, got, _ in results:
            self.assertEqual(got, sent, "a parallel stream's echo differs")
        await task.deferLater(reactor, 0.2, lambda: None)


def _make(flavour: str, client: str, server: str) -> None:
    async def test(self: HTTP2Interop) -> None:
        await self.run_pair(flavour, client, server)

    test.__name__ = f"test_{flavour}_{client}_client_{server}_server"
    test.__doc__ = (f"VMess over {flavour}: {client} client, {server} server, 20 MB each way, "
                    "UDP echo, 8 parallel streams.")
    setattr(HTTP2Interop, test.__name__, test)


for _flavour, (_, _, _pairs) in FLAVOURS.items():
    for _client, _server in _pairs:
        _make(_flavour, _client, _server)
