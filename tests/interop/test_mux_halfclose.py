"""Half-close over Mux.Cool against V2Ray 4.34: the timelines of mux.md §3.4.

``app -socks-> client (mux on) == carrier == server -> freedom -> target``, the target a
server in this process that records what it sees.

*App closes first* (the app sends, then shuts down its write side):

- vtwist client, V2Ray server: vtwist sends End and keeps the session's downlink open, so
  the app gets the whole answer (a 4.34 client would have dropped it: it closes the app's
  downlink with its End); V2Ray's End (or End + Error, about 1 s after the last downlink
  data) then ends the session.
- V2Ray client, vtwist server: the 4.34 client's End closes the app's downlink at once;
  the vtwist server closes the target's write side (the target sees EOF), the downlink
  frames 4.34 then answers with End do not disturb the carrier.

*Target closes first* (the target writes a greeting and closes):

- vtwist client: the app gets the greeting and a half-close, may still write (V2Ray answers
  with End for the id it forgot, which vtwist ignores), then closes.
- vtwist server: End after the greeting; the frames the 4.34 client still sends for that id
  are answered with End and dropped.

In every case the carrier survives: the next connection rides the same one, and vtwist logs
no mux failure.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.interop.test_mux_interop import (
    pool_of,
    server_carriers,
    server_inbound,
    sockets_on,
    socks_inbound,
    vmess_outbound,
)
from tests.interop.v2ray_runner import V2Ray
from tests.interop.vmess_harness import SocksStream
from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.testing.doubles import log_lines

GREETING = b"hello from the target\r\n" * 100
SIZE = 256 * 1024


@implementer(IHalfCloseableProtocol)
class _Target(protocol.Protocol):
    """Echoes (``greet``: writes a greeting and closes instead); records the EOF."""

    def __init__(self, factory: _Targets) -> None:
        self.factory = factory
        self.data = bytearray()
        self.eof: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.factory.made.append(self)
        if self.factory.greet:
            self.transport.write(GREETING)
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.factory.greet:
            self.transport.write(data)

    def readConnectionLost(self) -> None:
        if not self.eof.called:
            self.eof.callback(bytes(self.data))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class _Targets(protocol.Factory):
    def __init__(self, greet: bool) -> None:
        self.greet = greet
        self.made: list[_Target] = []

    def buildProtocol(self, addr: Any) -> _Target:
        p = _Target(self)
        p.factory = self
        return p


@implementer(IHalfCloseableProtocol)
class HalfCloseSocks(SocksStream):
    """A SOCKS stream that keeps what arrives and accepts the proxy's half-close."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.data = bytearray()
        self.readLost: defer.Deferred[bytes] = defer.Deferred()
        #: the proxy half-closed (EOF while the app could still write)
        self.halfClosed = False

    def dataReceived(self, data: bytes) -> None:
        if self.state == 2:
            self.data += data
        super().dataReceived(data)

    def readConnectionLost(self) -> None:
        self.halfClosed = True
        self._readDone()

    def _readDone(self) -> None:
        if not self.readLost.called:
            self.readLost.callback(bytes(self.data))

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self._readDone()
        super().connectionLost(reason)


class _HalfClose:
    """The four timelines; a subclass sets up one pairing (a mixin with TestCase)."""

    timeout = 120

    async def setUpTarget(self, greet: bool) -> int:
        self.targets = _Targets(greet)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(self.targets)
        self.addCleanup(port.stopListening)
        number = port.getHost().port

        async def drained() -> None:
            await wait_until(lambda: not sockets_on(number), "target connections open", 30)
        self.addCleanup(lambda: defer.ensureDeferred(drained()))
        return number

    async def socksPort(self) -> int:
        raise NotImplementedError

    def carriers(self) -> int:
        raise NotImplementedError

    async def connect(self, socks: int, target: int) -> HalfCloseSocks:
        p = HalfCloseSocks("127.0.0.1", target)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", socks).connect(
            protocol.Factory.forProtocol(lambda: p))
        await p.ready.addTimeout(10, reactor)
        return p

    async def followUp(self, socks: int, target: int) -> None:
        """One more exchange rides the same carrier; no mux failure was logged."""
        p = await self.connect(socks, target)
        p.transport.write(b"ping")
        await wait_until(lambda: len(p.data) >= 4, "the follow-up echo", 20)
        self.assertEqual(bytes(p.data), b"ping")
        p.transport.loseConnection()
        await p.closed
        self.assertEqual(self.carriers(), 1)
        self.assertEqual([line for line in self.logs if "closing the mux" in line], [])

    async def run_app_closes_first(self) -> tuple[HalfCloseSocks, bytes]:
        self.logs = log_lines(self, "vtwist")
        echo = await self.setUpTarget(greet=False)
        socks = await self.socksPort()
        p = await self.connect(socks, echo)
        block = os.urandom(SIZE)
        p.transport.write(block)
        p.transport.loseWriteConnection()
        await p.readLost.addTimeout(30, reactor)
        p.transport.loseConnection()
        await p.closed.addTimeout(10, reactor)
        await self.followUp(socks, echo)
        return p, block

    async def run_target_closes_first(self) -> HalfCloseSocks:
        self.logs = log_lines(self, "vtwist")
        greeter = await self.setUpTarget(greet=True)
        socks = await self.socksPort()
        p = await self.connect(socks, greeter)
        got = await p.readLost.addTimeout(20, reactor)
        self.assertEqual(got, GREETING)
        if not p.closed.called:  # the app's uplink is still forwarded, then it closes
            p.transport.write(b"after the target's end" * 1000)
            p.transport.loseConnection()
        await p.closed.addTimeout(20, reactor)
        self.targets.greet = False
        await self.followUp(socks, (await self.setUpTarget(greet=False)))
        return p


class VTwistClientV2RayServer(_HalfClose, TestCase):
    """vtwist socks + vmess (mux) -> V2Ray vmess -> freedom -> target."""

    async def socksPort(self) -> int:
        server_port, port = free_port(), free_port()
        v2ray = V2Ray({"log": {"loglevel": "warning"},
                       "inbounds": [server_inbound(server_port)],
                       "outbounds": [{"protocol": "freedom"}]}, [server_port])
        self.addCleanup(v2ray.stop)
        self.service = await start_service({"log": {"loglevel": "warning"},
                                            "inbounds": [socks_inbound(port)],
                                            "outbounds": [vmess_outbound(server_port)]}, self)
        return port

    def carriers(self) -> int:
        return pool_of(self.service).dialed

    async def test_app_closes_first_keeps_the_answer(self) -> None:
        """After its End, vtwist still takes the downlink: the whole echo arrives."""
        p, block = await self.run_app_closes_first()
        self.assertEqual(len(p.data), len(block))
        self.assertEqual(bytes(p.data), block)
        self.assertEqual(bytes(self.targets.made[0].data), block)

    async def test_target_closes_first(self) -> None:
        """Greeting, half-close to the app, the app's late bytes go nowhere harmful."""
        p = await self.run_target_closes_first()
        self.assertTrue(p.halfClosed)


class V2RayClientVTwistServer(_HalfClose, TestCase):
    """V2Ray socks + vmess (mux) -> vtwist vmess -> freedom -> target."""

    async def socksPort(self) -> int:
        server_port, port = free_port(), free_port()
        v2ray = V2Ray({"log": {"loglevel": "warning"}, "inbounds": [socks_inbound(port)],
                       "outbounds": [vmess_outbound(server_port)]}, [port])
        self.addCleanup(v2ray.stop)

        async def carriersClosed() -> None:
            await wait_until(lambda: not sockets_on(server_port), "carriers open", 30)
        self.addCleanup(lambda: defer.ensureDeferred(carriersClosed()))
        service = await start_service({"log": {"loglevel": "warning"},
                                       "inbounds": [server_inbound(server_port)],
                                       "outbounds": [{"protocol": "freedom"}]}, self)
        self.factory = service.inbound_services[0].factory
        return port

    def carriers(self) -> int:
        return server_carriers(self.factory)

    async def test_app_closes_first_target_sees_eof(self) -> None:
        """4.34 ends the app's downlink with its End; vtwist closes the target's write side:
        the target has every byte and sees EOF."""
        p, block = await self.run_app_closes_first()
        target = self.targets.made[0]
        got = await target.eof.addTimeout(20, reactor)
        self.assertEqual(got, block)
        self.assertLessEqual(len(p.data), len(block))
        self.assertEqual(bytes(p.data), block[: len(p.data)])

    async def test_target_closes_first(self) -> None:
        """End after the greeting; 4.34's later frames for the id are harmless."""
        await self.run_target_closes_first()
