"""``endpoint_for_link(reactor, link)`` and the ``vmess:link=...`` endpoint strings, for
every link scheme, against vtwist servers of each protocol on 127.0.0.1."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import clientFromString, connectProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from tests.netutil import free_port
from tests.services import serve_web, start_service
from vtwist.share.endpoints import endpoint_for_link, endpoint_string, escape, parse_client
from vtwist.share.errors import LinkError
from vtwist.share.outbound import inbound_to_outbound, outbound_to_link
from vtwist.testing.doubles import Collector


def server_inbound(protocol: str, port: int) -> dict[str, Any]:
    """A server inbound of ``protocol`` on 127.0.0.1:``port``."""
    settings: dict[str, Any] = {
        "vmess": {"clients": [{"id": str(uuid.uuid4())}]},
        "vless": {"clients": [{"id": str(uuid.uuid4())}], "decryption": "none"},
        "trojan": {"clients": [{"password": "correct horse"}]},
        "shadowsocks": {"method": "aes-128-gcm", "password": "battery staple"},
    }[protocol]
    return {"tag": f"{protocol}-in", "protocol": protocol, "listen": "127.0.0.1",
            "port": port, "settings": settings}


class EndpointForLinkTests(TestCase):
    timeout = 60

    async def server_link(self, protocol: str) -> str:
        """A vtwist server of ``protocol``; the link pointing at it (as ``link encode``)."""
        inbound = server_inbound(protocol, free_port())
        await start_service({"inbounds": [inbound], "outbounds": [{"protocol": "freedom"}]},
                            self)
        return outbound_to_link(inbound_to_outbound(inbound, "127.0.0.1"),
                                warn=lambda _: None).to_link()

    @defer.inlineCallbacks
    def test_agent_through_every_scheme(self) -> Any:
        """An Agent fetches a local page through a server of each protocol, the link being
        the only thing the client is given."""
        web = serve_web(self, {b"hi": b"through the link\n"})
        for protocol in ("vmess", "vless", "trojan", "shadowsocks"):
            link = yield defer.ensureDeferred(self.server_link(protocol))
            through = endpoint_for_link(reactor, link)
            self.addCleanup(through.close)
            agent = Agent.usingEndpointFactory(reactor, through)
            response = yield agent.request(b"GET", f"http://127.0.0.1:{web}/hi".encode())
            body = yield readBody(response)
            self.assertEqual(body, b"through the link\n", protocol)

    @defer.inlineCallbacks
    def test_endpoint_strings(self) -> Any:
        """``clientFromString(reactor, "vmess:link=...:host=...:port=...")`` (and vless:,
        trojan:, ss:) carries a raw protocol to an echo service."""
        from twisted.internet.protocol import Factory, Protocol

        class Echo(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)

        echo = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        for protocol in ("vmess", "vless", "trojan", "shadowsocks"):
            link = yield defer.ensureDeferred(self.server_link(protocol))
            description = endpoint_string(link, "127.0.0.1", echo.getHost().port)
            self.assertTrue(description.startswith(link.partition("://")[0] + ":link="))
            client = Collector()
            yield connectProtocol(clientFromString(reactor, description), client)
            message = b"ping " + protocol.encode()
            client.transport.write(message)
            yield client.wait(len(message))
            self.assertEqual(bytes(client.buf), message, protocol)
            client.transport.loseConnection()


class ParseTests(SynchronousTestCase):
    def test_escape(self) -> None:
        self.assertEqual(escape("vmess://a=b:c\\d"), "vmess\\://a\\=b\\:c\\\\d")

    def test_bad_strings(self) -> None:
        for kwargs, message in (({"host": "h", "port": "1"}, "needs link="),
                                ({"link": "x", "host": "h", "port": "99999"}, "port:")):
            e = self.assertRaises(ValueError, parse_client, "vmess", reactor, **kwargs)
            self.assertIn(message, str(e))
        self.assertRaises(LinkError, endpoint_for_link, reactor, "vmess://nope")
