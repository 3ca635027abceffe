"""TLS session resumption: vtwist's client offers its last session, servers issue tickets
(the key replaced on a timer); vtwist and V2Ray 4.34 (``enableSessionResumption``) both ways."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase

from tests.interop.transport_support import TransportTestCase, stream_settings
from tests.netutil import free_port
from vtwist.transport import stack
from vtwist.transport.tls.context import RotatingServerOptions


def tls_layer(protocol: Any) -> Any:
    """The TLSLayer under an application protocol (through ws, if any)."""
    transport = protocol.transport
    while not hasattr(transport, "resumed"):
        transport = transport.transport
    return transport


class Resumed(Protocol):
    """Records whether its connection's TLS handshake resumed, then echoes."""

    seen: list[bool]

    def connectionMade(self) -> None:
        self.seen.append(tls_layer(self).resumed)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class Ping(Protocol):
    """Sends a byte, waits for its echo, closes; ``done`` fires with the resumed flag."""

    def __init__(self) -> None:
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.resumed = tls_layer(self).resumed
        self.transport.write(b"x")

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(self.resumed)


class RotationTests(SynchronousTestCase):
    def test_rebuilt_after_lifetime(self) -> None:
        now = [0.0]
        built: list[object] = []

        def build() -> Any:
            built.append(object())
            return built[-1]

        options = RotatingServerOptions(build, lifetime=10, now=lambda: now[0])  # type: ignore
        self.assertIs(options.current(), built[0])
        now[0] = 9.9
        self.assertIs(options.current(), built[0])
        now[0] = 10
        self.assertIs(options.current(), built[1])
        self.assertEqual(len(built), 2)


class ResumptionTests(TransportTestCase):
    timeout = 60

    async def serve(self, kind: str, seen: list[bool], resumption: bool = True) -> int:
        settings_json = self.fx.settings(kind, inbound=True)
        if not resumption:
            settings_json["tlsSettings"]["enableSessionResumption"] = False
        server = stream_settings(settings_json, inbound=True)
        factory = Factory.forProtocol(Resumed)
        factory.protocol.seen = seen  # type: ignore[attr-defined]
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, server), factory)
        return port.getHost().port

    async def pings(self, port: int, kind: str, count: int, client: Any = None) -> list[bool]:
        if client is None:
            client = stream_settings(self.fx.settings(kind, inbound=False), inbound=False)
        flags = []
        for _ in range(count):
            endpoint = stack.client_endpoint(reactor, "127.0.0.1", port, client)
            ping = Ping()
            await endpoint.connect(Factory.forProtocol(lambda p=ping: p))
            flags.append(await ping.done)
        return flags

    async def test_tls_and_wss_resume(self) -> None:
        for kind in ("tls", "wss"):
            seen: list[bool] = []
            port = await self.serve(kind, seen)
            self.assertEqual(await self.pings(port, kind, 3), [False, True, True])
            self.assertEqual(seen, [False, True, True])

    async def test_server_with_resumption_off(self) -> None:
        seen: list[bool] = []
        port = await self.serve("tls", seen, resumption=False)
        self.assertEqual(await self.pings(port, "tls", 3), [False, False, False])
        self.assertEqual(seen, [False, False, False])

    async def test_client_with_resumption_off(self) -> None:
        seen: list[bool] = []
        port = await self.serve("tls", seen)
        client_json = self.fx.settings("tls", inbound=False)
        client_json["tlsSettings"]["enableSessionResumption"] = False
        client = stream_settings(client_json, inbound=False)
        self.assertEqual(await self.pings(port, "tls", 2, client), [False, False])

    async def test_client_with_the_older_disable_key(self) -> None:
        """``disableSessionResumption`` (V2Ray before 4.33, v2fly's examples) is honoured."""
        seen: list[bool] = []
        port = await self.serve("tls", seen)
        for disable, expected in ((True, [False, False]), (False, [False, True])):
            client_json = self.fx.settings("tls", inbound=False)
            client_json["tlsSettings"]["disableSessionResumption"] = disable
            client = stream_settings(client_json, inbound=False)
            self.assertEqual(await self.pings(port, "tls", 2, client), expected)

    async def test_new_ticket_key_means_one_full_handshake(self) -> None:
        seen: list[bool] = []
        clock = [0.0]
        original = RotatingServerOptions.__init__

        def fake_now(options: Any, build: Any, lifetime: float = 10.0, now: Any = None) -> None:
            original(options, build, lifetime, lambda: clock[0])

        self.patch(RotatingServerOptions, "__init__", fake_now)
        port = await self.serve("tls", seen)
        client = stream_settings(self.fx.settings("tls", inbound=False), inbound=False)
        self.assertEqual(await self.pings(port, "tls", 2, client), [False, True])
        clock[0] = 11.0  # the server's contexts (and ticket key) are replaced
        self.assertEqual(await self.pings(port, "tls", 2, client), [False, True])

    async def test_vtwist_client_resumes_with_v2ray_server(self) -> None:
        port = free_port()
        server = self.fx.settings("tls", inbound=True)
        server["tlsSettings"]["enableSessionResumption"] = True
        proc = self.v2ray({
            "inbounds": [{"port": port, "listen": "127.0.0.1", "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": await self.echo_server(),
                                       "network": "tcp"},
                          "streamSettings": server}],
            "outbounds": [{"protocol": "freedom"}]})
        await proc.wait_port(port)
        self.assertEqual(await self.pings(port, "tls", 3), [False, True, True])

    async def test_v2ray_client_resumes_with_vtwist_server(self) -> None:
        seen: list[bool] = []
        server_port = await self.serve("tls", seen)
        local = free_port()
        client = self.fx.settings("tls", inbound=False)
        client["tlsSettings"]["enableSessionResumption"] = True
        proc = self.v2ray({
            "inbounds": [{"port": local, "listen": "127.0.0.1", "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": 9, "network": "tcp"}}],
            "outbounds": [{"protocol": "freedom", "settings": {
                "redirect": f"127.0.0.1:{server_port}"}, "streamSettings": client}]})
        await proc.wait_port(local)
        for _ in range(3):
            ping = PlainPing()
            await TCP4ClientEndpoint(reactor, "127.0.0.1", local).connect(
                Factory.forProtocol(lambda p=ping: p))
            await ping.done
        # The first connection is a full handshake; once V2Ray holds a ticket, it resumes.
        self.assertFalse(seen[0], seen)
        self.assertEqual(seen[-2:], [True, True])


class PlainPing(Ping):
    """A Ping over plain TCP (V2Ray's client does the TLS)."""

    def connectionMade(self) -> None:
        self.resumed = None
        self.transport.write(b"x")
