"""VLESS fallbacks with curl, on vtwist and on V2Ray 4.34 with the same config.

A VLESS server over TLS hides behind local web servers: curl (HTTP/1.1, with and without
ALPN, several paths) gets each web server's page through the fallback 4.34 would choose, and
the web servers behind ``xver`` 1 and 2 (Twisted's ``proxyEndpoint``) see curl's own address and
port in the PROXY header. A real VLESS client still gets through on the same port.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.haproxy import proxyEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site

from tests.interop.transport_support import SERVER_NAME, TransportTestCase
from tests.interop.v2ray_runner import EchoServer
from tests.interop.vmess_harness import socks_echo
from tests.netutil import free_port
from tests.services import start_service

UUID = str(uuid.uuid4())


class Page(Resource):
    """Answers every path with its name (and, behind a PROXY header, the client's address)."""

    isLeaf = True

    def __init__(self, name: bytes, show_peer: bool = False) -> None:
        super().__init__()
        self.name = name
        self.show_peer = show_peer

    def render_GET(self, request: Any) -> bytes:
        if self.show_peer:
            peer = request.getClientAddress()
            return self.name + f" {peer.host}:{peer.port}".encode()
        return self.name


class VLESSFallbackCurl(TransportTestCase):
    """curl through the fallbacks of a vtwist or V2Ray VLESS server."""

    timeout = 60

    async def web(self, name: bytes, proxied: bool = False) -> int:
        endpoint: Any = TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")
        if proxied:  # Twisted's HAProxy endpoint: a PROXY v1 or v2 header is required
            endpoint = proxyEndpoint(endpoint)
        port = await endpoint.listen(Site(Page(name, proxied)))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def config(self, port: int) -> dict[str, Any]:
        fallbacks = [
            {"dest": await self.web(b"default")},
            {"alpn": "http/1.1", "dest": await self.web(b"http11")},
            {"path": "/site", "dest": f"127.0.0.1:{await self.web(b'site')}"},
            {"path": "/v1", "dest": await self.web(b"proxied-v1", True), "xver": 1},
            {"path": "/v2", "dest": await self.web(b"proxied-v2", True), "xver": 2},
        ]
        stream = self.fx.settings("tls", inbound=True)
        stream["tlsSettings"]["alpn"] = ["h2", "http/1.1"]  # as fallback setups have it
        return {
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "vless",
                          "settings": {"clients": [{"id": UUID}], "decryption": "none",
                                       "fallbacks": fallbacks},
                          "streamSettings": stream}],
            "outbounds": [{"protocol": "freedom"}],
        }

    async def server(self, who: str) -> int:
        port = free_port()
        if who == "vtwist":
            await start_service(await self.config(port), self)
        else:
            await self.v2ray(await self.config(port)).wait_port(port)
        return port

    def curl(self, port: int, path: str, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return getProcessOutputAndValue("curl", [
            "-sS", "--max-time", "10", "--http1.1", "--cacert", self.fx.ca_file,
            "--resolve", f"{SERVER_NAME}:{port}:127.0.0.1", "-w", "\n%{local_port}", *args,
            f"https://{SERVER_NAME}:{port}{path}"], env=dict(os.environ))

    async def check(self, who: str) -> None:
        port = await self.server(who)
        expected = [
            ("/", (), b"http11"),                      # ALPN http/1.1 row
            ("/", ("--no-alpn",), b"default"),         # no ALPN: the "" row
            ("/site", (), b"site"),                    # path inherited by the http/1.1 row
            ("/site", ("--no-alpn",), b"site"),
            ("/elsewhere", ("--no-alpn",), b"default"),
        ]
        for path, args, page in expected:
            out, err, code = await self.curl(port, path, *args)
            self.assertEqual(code, 0, err)
            body, _, _ = out.rpartition(b"\n")
            self.assertEqual(body, page, f"{who} {path} {args}")
        for path, name in (("/v1", b"proxied-v1"), ("/v2", b"proxied-v2")):
            out, err, code = await self.curl(port, path)
            self.assertEqual(code, 0, err)
            body, _, local_port = out.rpartition(b"\n")
            self.assertEqual(body, name + b" 127.0.0.1:" + local_port, f"{who} {path}")

    async def test_vtwist(self) -> None:
        """vtwist chooses and relays as 4.34 does; the PROXY header carries curl's address."""
        await self.check("vtwist")

    async def test_v2ray_same_config(self) -> None:
        """V2Ray 4.34 on the same config gives the same pages (the reference)."""
        await self.check("v2ray")

    async def test_vless_client_still_served(self) -> None:
        """A VLESS client on the same port is not sent to a fallback."""
        echo = EchoServer()
        self.addCleanup(echo.stop)
        port = await self.server("vtwist")
        socks = free_port()
        await start_service({
            "inbounds": [{"listen": "127.0.0.1", "port": socks, "protocol": "socks",
                          "settings": {"auth": "noauth"}}],
            "outbounds": [{"protocol": "vless", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": port,
                "users": [{"id": UUID, "encryption": "none"}]}]},
                "streamSettings": self.fx.settings("tls", inbound=False)}]}, self)
        sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", echo.port, 1 << 20)
        self.assertEqual(got, sent)
        out, err, code = await self.curl(port, "/site")
        self.assertEqual(out.rpartition(b"\n")[0], b"site")


class Banner(Protocol):
    """A server that speaks first (SMTP-like)."""

    def connectionMade(self) -> None:
        self.transport.write(b"220 banner\r\n")


class Listener(Protocol):
    """A client that waits for the server to speak."""

    def __init__(self) -> None:
        self.got = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.got += data
        if self.got.endswith(b"\r\n") and not self.done.called:
            self.done.callback(self.got)


class SilentClientFallback(TransportTestCase):
    """A client that sends nothing goes to the fallback after the handshake timeout, in
    V2Ray 4.34 (its first read times out empty: "fallback directly") and in vtwist."""

    timeout = 30

    async def check(self, who: str) -> None:
        from twisted.internet.endpoints import TCP4ClientEndpoint
        from twisted.internet.protocol import Factory

        banner = reactor.listenTCP(0, Factory.forProtocol(Banner), interface="127.0.0.1")
        self.addCleanup(banner.stopListening)
        port = free_port()
        config = {
            "log": {"loglevel": "warning"},
            "policy": {"levels": {"0": {"handshake": 1}}},
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "vless",
                          "settings": {"clients": [{"id": UUID}], "decryption": "none",
                                       "fallbacks": [{"dest": banner.getHost().port}]}}],
            "outbounds": [{"protocol": "freedom"}]}
        if who == "vtwist":
            await start_service(config, self)
        else:
            await self.v2ray(config).wait_port(port)
        client = Listener()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client))
        got = await client.done.addTimeout(5, reactor)
        self.assertEqual(got, b"220 banner\r\n")
        client.transport.loseConnection()

    async def test_vtwist(self) -> None:
        await self.check("vtwist")

    async def test_v2ray(self) -> None:
        await self.check("v2ray")
