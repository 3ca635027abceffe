"""Transports against the real V2Ray 4.34 with a plain byte stream (no VMess).

* vtwist client endpoint -> V2Ray dokodemo-door inbound using the transport -> echo.
* plain TCP -> V2Ray dokodemo-door -> freedom outbound dialing with the transport's
  streamSettings -> vtwist server endpoint -> echo.
"""

from __future__ import annotations

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.interop.transport_support import TransportTestCase, stream_settings
from tests.netutil import free_port
from vtwist.testing.doubles import Echo
from vtwist.transport import stack

SIZE = 4 * 1024 * 1024


def _on(network: str | None, settings: dict) -> dict:
    """``settings`` moved onto another base network (kcp: TLS over mKCP)."""
    if network is not None:
        settings["network"] = network
    return settings


class _EveryKind:
    """One test per transport combination, each run through the subclass's ``check``."""

    async def check(self, kind: str, network: str | None = None) -> None:
        raise NotImplementedError

    async def test_tls_over_kcp(self) -> None:
        await self.check("tls", "kcp")

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


class VTwistClientToV2RayServer(_EveryKind, TransportTestCase):
    """vtwist's client endpoints against V2Ray's listeners."""

    async def check(self, kind: str, network: str | None = None) -> None:
        echo = await self.echo_server()
        port = free_port()
        proc = self.v2ray({
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": echo, "network": "tcp"},
                          "streamSettings": _on(network, self.fx.settings(kind, inbound=True))}],
            "outbounds": [{"protocol": "freedom"}],
        })
        if network == "kcp":
            await task.deferLater(reactor, 0.5, lambda: None)  # UDP: nothing to poll
        else:
            await proc.wait_port(port)
        settings = stream_settings(_on(network, self.fx.settings(kind, inbound=False)),
                                   inbound=False)
        if network != "kcp":
            await self.transfer(stack.client_endpoint(reactor, "127.0.0.1", port, settings),
                                SIZE)
            return
        from vtwist.transport.kcp.endpoints import KCPClientEndpoint
        from vtwist.transport.tls import layer as tls

        kcp = KCPClientEndpoint(reactor, "127.0.0.1", port, settings.kcp, linger=0.2)
        client = await self.transfer(
            tls.wrap_client_endpoint(reactor, kcp, "127.0.0.1", settings.tls), SIZE)
        await client.transport.transport.terminated  # the TLS layer, then mKCP


class V2RayClientToVTwistServer(_EveryKind, TransportTestCase):
    """V2Ray's dialers (freedom + streamSettings) against vtwist's server endpoints."""

    async def check(self, kind: str, network: str | None = None) -> None:
        from twisted.internet.protocol import Factory

        settings = stream_settings(_on(network, self.fx.settings(kind, inbound=True)),
                                   inbound=True)
        target = free_port() if network == "kcp" else 0
        server = await self.listen(
            stack.server_endpoint(reactor, "127.0.0.1", target, settings),
            Factory.forProtocol(Echo))
        target = target or server.getHost().port
        port = free_port()
        proc = self.v2ray({
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": target,
                                       "network": "tcp"}}],
            "outbounds": [{"protocol": "freedom",
                           "streamSettings": _on(network, self.fx.settings(kind,
                                                                           inbound=False))}],
        })
        await proc.wait_port(port)
        await self.transfer(TCP4ClientEndpoint(reactor, "127.0.0.1", port), SIZE)
