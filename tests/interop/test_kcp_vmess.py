"""VMess over mKCP between vtwist and V2Ray 4.34 in every pairing.

``VMess client == mKCP == VMess server -> freedom -> echo``; 20 MB each way with sha256
equality for header dtls with and without seed (vtwist<->V2Ray both ways and
vtwist<->vtwist), each other header type once with a smaller transfer, and several
concurrent streams on one port.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.interop.kcp_support import kcp_settings
from tests.interop.transport_support import (
    HashingClient,
    TransportTestCase,
    vmess_client_config,
    vmess_server_config,
)
from tests.netutil import free_port
from tests.services import start_service
from vtwist.address import Destination
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.users import Account
from vtwist.transport.kcp.config import parse_kcp_settings
from vtwist.transport.kcp.endpoints import KCPClientEndpoint

UUID = "0f4a0c7e-3b6d-4c61-9e57-4f6d1b0d2a11"
SECURITY = "aes-128-gcm"
BIG = 20 * 1024 * 1024
LINGER = 0.3


def stream_json(kcp: dict[str, Any]) -> dict[str, Any]:
    return {"network": "kcp", "kcpSettings": kcp}


def server_config(port: int, kcp: dict[str, Any]) -> dict[str, Any]:
    """A VMess-over-mKCP server config for vtwist or V2Ray."""
    return vmess_server_config(port, UUID, stream_json(kcp))


class _RecordingKCPClient(KCPClientEndpoint):
    """Remembers every mKCP transport it made, so tests can wait for their end."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.transports: list[Any] = []

    async def _connect(self, factory: Any) -> Any:
        proto = await super()._connect(factory)
        self.transports.append(proto.transport)
        return proto


class VMessOverKCPInterop(TransportTestCase):
    timeout = 120

    async def vtwist_server(self, kcp: dict[str, Any]) -> tuple[int, Any]:
        port = free_port(udp_too=True)
        service = await start_service(server_config(port, kcp), self)
        return port, service

    async def v2ray_server(self, kcp: dict[str, Any]) -> int:
        port = free_port(udp_too=True)
        proc = self.v2ray(server_config(port, kcp))
        await proc.wait_started()
        return port

    def vtwist_client(self, server_port: int, echo: int, kcp: dict[str, Any]) -> Any:
        from vtwist.config.node import Node

        cfg = parse_kcp_settings(Node(kcp, "kcpSettings"))
        kcp_ep = _RecordingKCPClient(reactor, "127.0.0.1", server_port, cfg, linger=LINGER)
        self.addCleanup(self._wait_kcp_closed, kcp_ep)
        return VMessClientEndpoint(kcp_ep, Account.from_text(UUID, security=SECURITY),
                                   Destination.tcp("127.0.0.1", echo), reactor=reactor)

    def _wait_kcp_closed(self, ep: _RecordingKCPClient) -> defer.Deferred:
        return defer.gatherResults([t.terminated for t in ep.transports])

    async def v2ray_client(self, server_port: int, echo: int, kcp: dict[str, Any]) -> Any:
        port = free_port(udp_too=True)
        proc = self.v2ray(vmess_client_config(port, echo, server_port, UUID, SECURITY,
                                              stream_json(kcp)))
        await proc.wait_port(port)
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    async def run_pair(self, kcp: dict[str, Any], client: str, server: str, size: int,
                       streams: int = 1) -> None:
        echo = await self.echo_server()
        if server == "vtwist":
            server_port, _ = await self.vtwist_server(kcp)
        else:
            server_port = await self.v2ray_server(kcp)
        if client == "vtwist":
            endpoint = self.vtwist_client(server_port, echo, kcp)
        else:
            endpoint = await self.v2ray_client(server_port, echo, kcp)
        if streams == 1:
            await self.transfer(endpoint, size)
            return
        clients = [HashingClient(size) for _ in range(streams)]
        for c in clients:
            await endpoint.connect(protocol.Factory.forProtocol(lambda c=c: c))
        await defer.gatherResults([c.done for c in clients])
        for c in clients:
            self.assertEqual(c.received, size, f"echo incomplete: {c.reason}")
            self.assertEqual(c.got.hexdigest(), c.sent.hexdigest())


def _make(name: str, kcp: dict[str, Any], client: str, server: str, size: int,
          streams: int = 1) -> None:
    async def test(self: VMessOverKCPInterop) -> None:
        await self.run_pair(kcp, client, server, size, streams)

    test.__name__ = f"test_{name}_{client}_client_{server}_server"
    test.__doc__ = f"VMess over mKCP ({name}): {client} client, {server} server."
    setattr(VMessOverKCPInterop, test.__name__, test)


_PAIRS = (("vtwist", "v2ray"), ("v2ray", "vtwist"), ("vtwist", "vtwist"))
for _c, _s in _PAIRS:
    _make("dtls", kcp_settings("dtls"), _c, _s, BIG)
    _make("dtls_seed", kcp_settings("dtls", "vtwist-seed"), _c, _s, BIG)
for _h in ("none", "srtp", "utp", "wechat-video", "wireguard"):
    _make(_h.replace("-", "_"), kcp_settings(_h), "vtwist", "v2ray", 1024 * 1024)
    _make(_h.replace("-", "_"), kcp_settings(_h), "v2ray", "vtwist", 1024 * 1024)
_make("dtls_8_streams", kcp_settings("dtls"), "vtwist", "v2ray", 1024 * 1024, 8)
_make("dtls_8_streams", kcp_settings("dtls"), "v2ray", "vtwist", 1024 * 1024, 8)
_make("dtls_16_streams", kcp_settings("dtls", ""), "vtwist", "vtwist", 1024 * 1024, 16)
