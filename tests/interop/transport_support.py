"""Shared pieces for the transport interop tests: run V2Ray, echo, hashed transfers, configs."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from tests.certs import shared_ca, shared_server_cert
from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.services import start_service
from vtwist.config.node import Node
from vtwist.testing.doubles import Echo
from vtwist.transport.settings import StreamSettings, parse_stream_settings

SERVER_NAME = "example.test"
#: (client, server) in every pairing of vtwist and V2Ray 4.34
PAIRINGS = (("vtwist", "v2ray"), ("v2ray", "vtwist"), ("vtwist", "vtwist"))


class HashingClient(protocol.Protocol):
    """Sends ``size`` pseudo-random bytes, hashes what comes back, closes when all arrived."""

    def __init__(self, size: int, expect: int | None = None) -> None:
        self.size = size
        self.expect = size if expect is None else expect
        self.sent = hashlib.sha256()
        self.got = hashlib.sha256()
        self.received = 0
        self.done: defer.Deferred = defer.Deferred()
        self.reason: Any = None

    def connectionMade(self) -> None:
        block = os.urandom(1 << 16)
        left = self.size
        chunks = []
        i = 0
        while left > 0:
            piece = block[: min(left, len(block))]
            piece = bytes([i & 0xFF]) + piece[1:]
            chunks.append(piece)
            self.sent.update(piece)
            left -= len(piece)
            i += 1
        self._chunks = chunks
        self.transport.registerProducer(self, True)
        self._paused = False
        self._push()

    def _push(self) -> None:
        while self._chunks and not self._paused:
            self.transport.write(self._chunks.pop(0))
        if not self._chunks:
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._chunks:
            self._push()

    def stopProducing(self) -> None:
        self._chunks = []

    def dataReceived(self, data: bytes) -> None:
        self.got.update(data)
        self.received += len(data)
        if self.received >= self.expect:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        if not self.done.called:
            self.done.callback(self)


def stream_settings(obj: dict[str, Any], inbound: bool) -> StreamSettings:
    """Parse a streamSettings dict (warnings raise, so tests see typos)."""
    def warn(msg: str) -> None:
        raise AssertionError(f"config warning: {msg}")

    return parse_stream_settings(Node(obj, "streamSettings", warn), inbound)


def vmess_server_config(port: int, user_id: str, stream: dict[str, Any]) -> dict[str, Any]:
    """A VMess server config (vmess inbound, freedom outbound) for vtwist or V2Ray."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "vmess",
                      "settings": {"clients": [{"id": user_id, "alterId": 0}]},
                      "streamSettings": stream}],
        "outbounds": [{"protocol": "freedom"}],
    }


def vmess_client_config(port: int, target: int, server_port: int, user_id: str,
                        security: str, stream: dict[str, Any]) -> dict[str, Any]:
    """V2Ray as VMess client: dokodemo-door on ``port`` to ``target`` via ``server_port``."""
    return {
        "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
                      "settings": {"address": "127.0.0.1", "port": target,
                                   "network": "tcp"}}],
        "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
            "address": "127.0.0.1", "port": server_port,
            "users": [{"id": user_id, "alterId": 0, "security": security}]}]},
            "streamSettings": stream}],
    }


def vmess_socks_client_config(socks: int, server_port: int, user_id: str, security: str,
                              stream: dict[str, Any]) -> dict[str, Any]:
    """A VMess client for vtwist or V2Ray: SOCKS inbound (with UDP) -> VMess outbound."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"listen": "127.0.0.1", "port": socks, "protocol": "socks",
                      "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}}],
        "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
            "address": "127.0.0.1", "port": server_port,
            "users": [{"id": user_id, "alterId": 0, "security": security}]}]},
            "streamSettings": stream}],
    }


class TransportFixture:
    """Files for TLS (CA + server certificate) and stream settings for each combination."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="vtwist-tr-")
        self.ca = shared_ca()
        self.cert = shared_server_cert(SERVER_NAME, "127.0.0.1")
        self.cert_file, self.key_file = self.cert.write(self.dir, "server")
        self.ca_file, _ = self.ca.write(self.dir, "ca")

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def tls_server(self) -> dict[str, Any]:
        return {"certificates": [{"certificateFile": self.cert_file, "keyFile": self.key_file}]}

    def tls_client(self, server_name: str = SERVER_NAME, **extra: Any) -> dict[str, Any]:
        return {"serverName": server_name,
                "certificates": [{"certificateFile": self.ca_file, "usage": "verify"}], **extra}

    def settings(self, kind: str, inbound: bool, path: str = "/tunnel") -> dict[str, Any]:
        """streamSettings for kind in tcp, tls, ws, wss, http, https."""
        out: dict[str, Any] = {"network": "tcp"}
        if kind in ("ws", "wss"):
            out = {"network": "ws", "wsSettings": {"path": path,
                                                   "headers": {"Host": SERVER_NAME}}}
            if inbound:
                out["wsSettings"].pop("headers")
        if kind in ("http", "https"):
            header: dict[str, Any] = {"type": "http", "request": {"path": ["/a", path]}}
            out = {"network": "tcp", "tcpSettings": {"header": header}}
        if kind in ("tls", "wss", "https"):
            out["security"] = "tls"
            out["tlsSettings"] = self.tls_server() if inbound else self.tls_client()
        return out


class TransportTestCase(TestCase):
    """A TestCase with the fixture, listening ports and processes cleaned up."""

    timeout = 60

    def setUp(self) -> None:
        self.fx = TransportFixture()
        self.addCleanup(self.fx.cleanup)

    def v2ray(self, config: dict[str, Any]) -> V2Ray:
        config.setdefault("log", {"loglevel": "warning"})
        proc = V2Ray(config)
        self.addCleanup(proc.stop)
        return proc

    async def listen(self, endpoint: Any, factory: Any) -> Any:
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return port

    async def echo_server(self) -> int:
        from twisted.internet.endpoints import TCP4ServerEndpoint

        port = await self.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 protocol.Factory.forProtocol(Echo))
        return port.getHost().port

    async def transfer(self, endpoint: Any, size: int) -> HashingClient:
        """Send ``size`` bytes through ``endpoint`` to an echo; check the sha256 both ways."""
        client = HashingClient(size)
        await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        await client.done
        self.assertEqual(client.received, size, f"echo incomplete: {client.reason}")
        self.assertEqual(client.got.hexdigest(), client.sent.hexdigest())
        return client


class PairingTestCase(TransportTestCase):
    """Pairings of vtwist and V2Ray 4.34 (client and server sides of a proxy chain), checked
    through the client's SOCKS inbound against an echo server shared by the class.

    A subclass defines ``run_pair(kind, client, server, ...)``; :func:`add_pairing_tests`
    adds one test per pairing.
    """

    echo: EchoServer

    def setUp(self) -> None:
        super().setUp()
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()

    async def start(self, who: str, config: dict[str, Any], port: int) -> None:
        """Run ``config`` in vtwist (in this process) or V2Ray; wait for its TCP ``port``."""
        if who == "vtwist":
            await start_service(config, self)
        else:
            await self.v2ray(config).wait_port(port)

    async def check_socks(self, socks: int, size: int, udp_sizes: tuple[int, ...],
                          streams: int = 0, timeout: float = 60.0) -> None:
        """Through the SOCKS port: ``size`` bytes echoed (sha256 both ways), a UDP echo of
        payloads of ``udp_sizes``, then ``streams`` parallel 2 MB echoes."""
        sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", self.echo.port, size,
                                        timeout=timeout)
        self.assertEqual(got, sent, f"{size >> 20} MB echo differs")
        payloads = [os.urandom(n) for n in udp_sizes]
        echoed = await socks_udp_echo(reactor, socks, "127.0.0.1", self.echo.port, payloads)
        self.assertEqual(echoed, payloads)
        if streams:
            results = await defer.gatherResults([
                defer.ensureDeferred(socks_echo(reactor, socks, "127.0.0.1", self.echo.port,
                                                2 * 1024 * 1024, timeout=timeout))
                for _ in range(streams)])
            for sent, got, _ in results:
                self.assertEqual(got, sent, "a parallel stream's echo differs")


def _pairing_test(kind: str, client: str, server: str, options: dict[str, Any]) -> Any:
    async def test(self: Any) -> None:
        await self.run_pair(kind, client, server, **options)

    test.__name__ = f"test_{kind}_{client}_client_{server}_server"
    return test


def add_pairing_tests(cls: type[PairingTestCase], kind: str,
                      pairings: tuple[tuple[str, str], ...], doc: str,
                      **options: Any) -> None:
    """Add ``test_{kind}_{client}_client_{server}_server`` to ``cls`` for each pairing:
    ``run_pair(kind, client, server, **options)``; ``doc`` is formatted with ``kind``,
    ``client`` and ``server``."""
    for client, server in pairings:
        test = _pairing_test(kind, client, server, options)
        test.__doc__ = doc.format(kind=kind, client=client, server=server)
        setattr(cls, test.__name__, test)
