"""Transports against the real V2Ray 4.34 with a plain byte stream (no VMess).

* vtwist client endpoint -> V2Ray dokodemo-door inbound using the transport -> echo.
* plain TCP -> V2Ray dokodemo-door -> freedom outbound dialing with the transport's
  streamSettings -> vtwist server endpoint -> echo.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.interop.transport_support import TransportTestCase, free_port, stream_settings, wait_port
from vtwist.transport import stream

SIZE = 4 * 1024 * 1024
KINDS = ("tls", "ws", "wss", "http", "https")


class VTwistClientToV2RayServer(TransportTestCase):
    """vtwist's client endpoints against V2Ray's listeners."""

    async def check(self, kind: str) -> None:
        echo = await self.echo_server()
        port = free_port()
        proc = self.v2ray({
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": echo, "network": "tcp"},
                          "streamSettings": self.fx.settings(kind, inbound=True)}],
            "outbounds": [{"protocol": "freedom"}],
        })
        await wait_port(port, proc)
        settings = stream_settings(self.fx.settings(kind, inbound=False), inbound=False)
        await self.transfer(stream.client_endpoint(reactor, "127.0.0.1", port, settings), SIZE)

    async def test_tls(self) -> None:
        await self.check("tls")

    async def test_ws(self) -> None:
        await self.check("ws")

    async def test_wss(self) -> None:
        await self.check("wss")

    async def test_http_header(self) -> None:
        await self.check("http")

    async def test_http_header_tls(self) -> None:
        await self.check("https")


class V2RayClientToVTwistServer(TransportTestCase):
    """V2Ray's dialers (freedom + streamSettings) against vtwist's server endpoints."""

    async def check(self, kind: str) -> None:
        from twisted.internet.protocol import Factory

        from tests.interop.transport_support import Echo

        settings = stream_settings(self.fx.settings(kind, inbound=True), inbound=True)
        server = await self.listen(stream.server_endpoint(reactor, "127.0.0.1", 0, settings),
                                   Factory.forProtocol(Echo))
        target = server.getHost().port
        port = free_port()
        proc = self.v2ray({
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": target,
                                       "network": "tcp"}}],
            "outbounds": [{"protocol": "freedom",
                           "streamSettings": self.fx.settings(kind, inbound=False)}],
        })
        await wait_port(port, proc)
        await self.transfer(TCP4ClientEndpoint(reactor, "127.0.0.1", port), SIZE)

    async def test_tls(self) -> None:
        await self.check("tls")

    async def test_ws(self) -> None:
        await self.check("ws")

    async def test_wss(self) -> None:
        await self.check("wss")

    async def test_http_header(self) -> None:
        await self.check("http")

    async def test_http_header_tls(self) -> None:
        await self.check("https")
