"""A client's half-close across Trojan and VLESS over TLS 1.3 (a close_notify ends one
direction, RFC 8446 §6.1), which have no end-of-stream mark of their own.

vtwist ↔ vtwist: the destination sees the client's EOF, answers after it, and every
connection closes as soon as the exchange is done (the client's ``downlinkOnly`` is long
here, so a tunnel left waiting for it would show). vtwist client → V2Ray 4.34 server: Go's
TLS ends the read at our close_notify and goes on writing, so an answer sent after the
client's half-close arrives whole (V2Ray's freedom does not pass the EOF on).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from tests.interop import test_trojan_interop as trojan
from tests.interop import test_vless_interop as vless
from tests.interop.transport_support import TransportTestCase
from tests.netutil import free_port
from tests.services import start_service

REQUEST = bytes(range(256)) * 64  # 16 KiB
LINGER = 30  # the clients' downlinkOnly: a tunnel waiting for it would outlive the test


@implementer(IHalfCloseableProtocol)
class AnswerAfterEOF(Protocol):
    """Reads until the client's EOF, then sends what it read reversed and closes."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.got.append(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"".join(self.got)[::-1])
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class AnswerLater(Protocol):
    """Once the request is in, sends 40 pieces of 8 KiB over about 0.4 s, then closes
    (no EOF needed: V2Ray's freedom does not pass one on)."""

    def dataReceived(self, data: bytes) -> None:
        if getattr(self, "_call", None) is None:
            self._left = 40
            self._call = task.LoopingCall(self._piece)
            self._call.start(0.01, now=False)

    def _piece(self) -> None:
        self.transport.write(bytes([self._left]) * 8192)
        self._left -= 1
        if not self._left:
            self._call.stop()
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        call = getattr(self, "_call", None)
        if call is not None and call.running:
            call.stop()


class HalfClosingClient(Protocol):
    """Sends the request, half-closes, and keeps what comes back until the close."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(REQUEST)
        self.transport.loseWriteConnection()

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(b"".join(self.received))


def _forward(config: dict[str, Any], port: int, target: int) -> dict[str, Any]:
    """``config`` with one dokodemo-door inbound on ``port`` to ``target``."""
    config["inbounds"] = [{"listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
                           "settings": {"address": "127.0.0.1", "port": target,
                                        "network": "tcp"}}]
    config["policy"] = {"levels": {"0": {"downlinkOnly": LINGER}}}
    return config


class TLSHalfCloseTests(TransportTestCase):
    timeout = 60

    async def chain(self, protocol: str, server: str, answer: type[Protocol]) -> int:
        """destination <- freedom <- {protocol} server (``server``) <=tls= vtwist client
        <- dokodemo-door: returns the dokodemo port."""
        factory = Factory.forProtocol(answer)
        port = await self.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 factory)
        target = port.getHost().port
        server_port, forward = free_port(), free_port()
        if protocol == "trojan":
            server_config = trojan.server_config(server_port,
                                                 self.fx.settings("tls", inbound=True))
            client_config = trojan.client_config(free_port(), free_port(), target,
                                                 server_port,
                                                 self.fx.settings("tls", inbound=False))
        else:
            server_config = vless.server_config(server_port,
                                                self.fx.settings("tls", inbound=True))
            client_config = vless.client_config(free_port(), server_port,
                                                self.fx.settings("tls", inbound=False))
        if server == "vtwist":
            await start_service(server_config, self)
        else:
            await self.v2ray(server_config).wait_port(server_port)
        await start_service(_forward(client_config, forward, target), self)
        return forward

    async def exchange(self, forward: int) -> tuple[bytes, float]:
        client = HalfClosingClient()
        started = time.monotonic()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", forward).connect(
            Factory.forProtocol(lambda: client))
        got = await client.done
        return got, time.monotonic() - started

    async def test_trojan_eof_reaches_the_destination(self) -> None:
        forward = await self.chain("trojan", "vtwist", AnswerAfterEOF)
        got, took = await self.exchange(forward)
        self.assertEqual(got, REQUEST[::-1])
        self.assertLess(took, LINGER / 3)  # closed by the exchange, not by downlinkOnly

    async def test_vless_eof_reaches_the_destination(self) -> None:
        forward = await self.chain("vless", "vtwist", AnswerAfterEOF)
        got, took = await self.exchange(forward)
        self.assertEqual(got, REQUEST[::-1])
        self.assertLess(took, LINGER / 3)

    async def test_trojan_v2ray_server_answers_after_the_half_close(self) -> None:
        forward = await self.chain("trojan", "v2ray", AnswerLater)
        got, _ = await self.exchange(forward)
        self.assertEqual(got, b"".join(bytes([n]) * 8192 for n in range(40, 0, -1)))

    async def test_vless_v2ray_server_answers_after_the_half_close(self) -> None:
        forward = await self.chain("vless", "v2ray", AnswerLater)
        got, _ = await self.exchange(forward)
        self.assertEqual(got, b"".join(bytes([n]) * 8192 for n in range(40, 0, -1)))
