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

from typing import Any

from twisted.internet import reactor, task

from tests.h2_support import clean_h2
from tests.interop.transport_support import (
    PAIRINGS,
    SERVER_NAME,
    PairingTestCase,
    add_pairing_tests,
    vmess_server_config,
    vmess_socks_client_config,
)
from tests.netutil import free_port

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
SECURITY = "aes-128-gcm"
SIZE = 20 * 1024 * 1024

#: flavour -> (network settings, TLS?, pairings)
FLAVOURS: dict[str, tuple[dict[str, Any], bool, tuple[tuple[str, str], ...]]] = {
    "h2_tls": ({"network": "http",
                "httpSettings": {"host": [SERVER_NAME, "other.test"], "path": "/tunnel"}},
               True, PAIRINGS),
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


class HTTP2Interop(PairingTestCase):
    """The pairings over each flavour."""

    timeout = 300

    def setUp(self) -> None:
        super().setUp()
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

    async def run_pair(self, flavour: str, client: str, server: str) -> None:
        server_port = free_port()
        await self.start(server, vmess_server_config(server_port, UUID,
                                                     self.stream(flavour, True)), server_port)
        socks = free_port(udp_too=True)
        await self.start(client, vmess_socks_client_config(
            socks, server_port, UUID, SECURITY, self.stream(flavour, False)), socks)
        await self.check_socks(socks, SIZE, (1, 100, 1024, 1400), streams=8, timeout=240)
        await task.deferLater(reactor, 0.2, lambda: None)


for _flavour, (_, _, _pairs) in FLAVOURS.items():
    add_pairing_tests(HTTP2Interop, _flavour, _pairs,
                      "VMess over {kind}: {client} client, {server} server, 20 MB each way, "
                      "UDP echo, 8 parallel streams.")
