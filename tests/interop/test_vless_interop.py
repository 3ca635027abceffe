"""VLESS against the real V2Ray 4.34 on loopback, over tcp, tls and ws+tls.

Every pairing carries ``SOCKS5 -> vless outbound == transport == vless inbound -> freedom ->
echo``: vtwist client -> V2Ray server, V2Ray client -> vtwist server, vtwist <-> vtwist. The
client config (socks inbound, vless outbound) and the server config (vless inbound, freedom)
are the same JSON for either program. Each pairing moves 20 MB each way (sha256 both ways)
and runs a UDP echo (SOCKS UDP ASSOCIATE -> VLESS UDP, length-prefixed datagrams).
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import protocol, reactor, task

from tests.interop.transport_support import (
    PAIRINGS,
    PairingTestCase,
    TransportTestCase,
    add_pairing_tests,
)
from tests.interop.v2ray_runner import EchoServer
from tests.interop.vmess_harness import socks_echo
from tests.netutil import free_port
from tests.services import start_service

UUID = str(uuid.uuid4())
SIZE = 20 * 1024 * 1024


def server_config(port: int, stream: dict[str, Any]) -> dict[str, Any]:
    """A VLESS server: vless inbound on ``port``, freedom out."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "vless",
                      "settings": {"clients": [{"id": UUID, "email": "v@test"}],
                                   "decryption": "none"},
                      "streamSettings": stream}],
        "outbounds": [{"protocol": "freedom"}],
    }


def client_config(socks: int, server: int, stream: dict[str, Any]) -> dict[str, Any]:
    """A VLESS client: socks inbound (with UDP) on ``socks``, vless outbound to ``server``."""
    return {
        "log": {"loglevel": "warning"},
        # Over WebSocket (and from V2Ray's client over TLS) a half-close cannot cross VLESS:
        # after the SOCKS client's FIN the tunnel lives on for downlinkOnly (5 s by
        # default), shortened here. (vtwist over TLS 1.3 sends a close_notify: see
        # test_tls_half_close.)
        "policy": {"levels": {"0": {"downlinkOnly": 1}}},
        "inbounds": [{"listen": "127.0.0.1", "port": socks, "protocol": "socks",
                      "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}}],
        "outbounds": [{"protocol": "vless", "settings": {"vnext": [{
            "address": "127.0.0.1", "port": server,
            "users": [{"id": UUID, "encryption": "none"}]}]},
            "streamSettings": stream}],
    }


class VLESSInterop(PairingTestCase):
    """transports x (vtwist | V2Ray client) x (vtwist | V2Ray server)."""

    timeout = 120

    async def run_pair(self, kind: str, client: str, server: str) -> None:
        server_port, socks = free_port(), free_port(udp_too=True)
        await self.start(server, server_config(server_port, self.fx.settings(kind, True)),
                         server_port)
        await self.start(client, client_config(socks, server_port,
                                               self.fx.settings(kind, False)), socks)
        await self.check_socks(socks, SIZE, (1, 100, 1400, 2000))
        if client == "vtwist":
            await settle()


async def settle(seconds: float = 1.3) -> None:
    """Let the client's tunnels end (downlinkOnly) and their TLS/WebSocket goodbyes finish
    before the services stop."""
    await task.deferLater(reactor, seconds, lambda: None)


for _kind in ("tcp", "tls", "wss"):
    add_pairing_tests(VLESSInterop, _kind, PAIRINGS,
                      "VLESS over {kind}: {client} client, {server} server, "
                      "20 MB each way + UDP.")


class Silent(protocol.Protocol):
    """A prober: sends its bytes, records anything that comes back."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.answer = b""
        self.closed = False

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.answer += data

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True


class ProbesOverSockets(TransportTestCase):
    """Random and mutated first packets over real sockets to a vtwist VLESS server without
    fallbacks: never answered, never closed early, while a real client is served."""

    timeout = 60

    async def test_probes_while_serving(self) -> None:
        import random

        from twisted.internet.endpoints import TCP4ClientEndpoint

        from vtwist.address import Destination
        from vtwist.proxy.vless.codec import CMD_TCP, encode_request
        from vtwist.proxy.vmess.ids import parse_uuid

        echo = EchoServer()
        self.addCleanup(echo.stop)
        server_port, socks = free_port(), free_port()
        await start_service(server_config(server_port, {"network": "tcp"}), self)
        await start_service(client_config(socks, server_port, {"network": "tcp"}), self)
        rng = random.Random(5)
        good = encode_request(parse_uuid(UUID), CMD_TCP, Destination.tcp("127.0.0.1", echo.port))
        probes = []
        for i in range(60):
            if i % 2:
                data = bytearray(good + b"hello")
                data[rng.randrange(0, 17)] ^= 0xFF
            else:
                data = bytearray(rng.randbytes(rng.randint(1, 400)))
            p = Silent(bytes(data))
            await TCP4ClientEndpoint(reactor, "127.0.0.1", server_port).connect(
                protocol.Factory.forProtocol(lambda p=p: p))
            probes.append(p)
        start = reactor.seconds()
        sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", echo.port, 4 << 20)
        self.assertEqual(got, sent)
        await task.deferLater(reactor, 0.5, lambda: None)
        # held: FIN only after the handshake deadline (4 s) plus 2-8 s
        early = reactor.seconds() - start < 5.5
        for p in probes:
            self.assertEqual(p.answer, b"")
            if early:
                self.assertFalse(p.closed)
            p.transport.abortConnection()
        await settle(0.2)
