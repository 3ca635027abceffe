"""Mux.Cool interop against the real V2Ray 4.34 on loopback, and vtwist <-> vtwist.

``socks -> vmess client (mux on) == one TCP carrier == vmess server -> freedom -> echo``

Pairings: V2Ray client with mux -> vtwist server, vtwist client with mux -> V2Ray server,
vtwist client -> vtwist server. Each checks parallel transfers in one carrier (sha256 both
ways), 200 short connections sharing carriers (the carriers counted on the server side where
vtwist is the server, on the client's pool otherwise), a UDP echo through UDP ASSOCIATE over
mux, and that aborting one stream mid-transfer leaves the others intact. The V2Ray client
also runs with concurrency 1 and 128. The suite fails (never skips) without /usr/bin/v2ray.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import SocksStream, socks_echo, socks_udp_echo
from tests.netutil import free_port
from tests.services import start_service

USER = str(uuid.uuid4())
#: parallel streams in one carrier, and the bytes each sends (and gets back)
STREAMS = 8
EACH = 20 * 1024 * 1024
EACH_PY = 6 * 1024 * 1024  # vtwist <-> vtwist: both ends in this process
SHORT = 200


def server_inbound(port: int) -> dict[str, Any]:
    return {"port": port, "listen": "127.0.0.1", "protocol": "vmess",
            "settings": {"clients": [{"id": USER, "alterId": 0, "email": "mux@test"}]}}


def vmess_outbound(port: int, concurrency: int | None = 8, tag: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": "vmess", "settings": {"vnext": [{
        "address": "127.0.0.1", "port": port,
        "users": [{"id": USER, "alterId": 0, "security": "aes-128-gcm"}]}]}}
    if concurrency is not None:
        out["mux"] = {"enabled": True, "concurrency": concurrency}
    if tag:
        out["tag"] = tag
    return out


def socks_inbound(port: int, tag: str = "") -> dict[str, Any]:
    inbound: dict[str, Any] = {"port": port, "listen": "127.0.0.1", "protocol": "socks",
                               "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}}
    if tag:
        inbound["tag"] = tag
    return inbound


async def parallel_echo(socks_port: int, port: int, n: int, size: int) -> list[tuple[str, str]]:
    """``n`` streams at once, each echoing ``size`` bytes: (sent, received) sha256 pairs."""
    runs = [defer.ensureDeferred(socks_echo(reactor, socks_port, "127.0.0.1", port, size,
                                            timeout=240))
            for _ in range(n)]
    results = await defer.gatherResults(runs, consumeErrors=True)
    return [(sent, got) for sent, got, _ in results]


async def short_connections(socks_port: int, port: int, n: int) -> None:
    """``n`` short echo connections one after another."""
    for i in range(n):
        payload = f"short {i} ".encode() * 20
        sent, got, _ = await socks_echo(reactor, socks_port, "127.0.0.1", port, len(payload))
        assert sent == got


async def isolation(test: TestCase, socks_port: int, port: int, size: int) -> None:
    """Eight streams; one is aborted mid-transfer; the other seven arrive intact."""
    streams = []
    for _ in range(STREAMS):
        p = SocksStream("127.0.0.1", port)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", socks_port).connect(
            protocol.Factory.forProtocol(lambda p=p: p))
        await p.ready.addTimeout(10, reactor)
        streams.append(p)
    block = os.urandom(size)
    want = hashlib.sha256(block).hexdigest()
    victim = streams[3]
    victim.transport.write(block[: size // 4])
    waits = []
    for p in streams:
        if p is victim:
            continue
        waits.append(p.expect(size).addTimeout(240, reactor))
        p.transport.write(block)
    first = victim.expect(1).addTimeout(60, reactor)
    await first
    victim.transport.abortConnection()
    got = await defer.gatherResults(waits, consumeErrors=True)
    test.assertEqual(got, [want] * (STREAMS - 1))
    for p in streams:
        if p is not victim:
            p.transport.loseConnection()
    await defer.gatherResults([p.closed for p in streams])


class _Pairing:
    """The tests every pairing runs (a mixin: a concrete class adds TestCase)."""

    timeout = 300
    echo: EchoServer
    size = EACH

    def setUp(self) -> None:
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()
            cls.startV2Ray()

    @classmethod
    def startV2Ray(cls) -> None:
        """Start the class's V2Ray (if it has one)."""

    async def socksPort(self, concurrency: int = 8) -> int:
        raise NotImplementedError

    def carriers(self) -> int:
        """How many mux carriers carried this test's traffic."""
        raise NotImplementedError

    async def test_parallel_streams(self) -> None:
        """Eight transfers at once in one carrier, sha256 each way."""
        port = await self.socksPort()
        pairs = await parallel_echo(port, self.echo.port, STREAMS, self.size)
        for sent, got in pairs:
            self.assertEqual(got, sent)
        self.assertEqual(self.carriers(), 1)

    async def test_short_connections_reuse(self) -> None:
        """200 short connections in a row share carriers (128 sessions each, at most)."""
        port = await self.socksPort()
        await short_connections(port, self.echo.port, SHORT)
        self.assertEqual(self.carriers(), 2)

    async def test_udp_echo(self) -> None:
        """UDP ASSOCIATE through a mux outbound: a UDP session per destination."""
        port = await self.socksPort()
        payloads = [b"abc", bytes(range(200)), b"\x5a" * 2000]
        got = await socks_udp_echo(reactor, port, "127.0.0.1", self.echo.port, payloads)
        self.assertEqual(got, payloads)

    async def test_isolation(self) -> None:
        """Aborting one stream mid-transfer leaves the other seven intact."""
        port = await self.socksPort()
        await isolation(self, port, self.echo.port, 2 * 1024 * 1024)


class V2RayClientToVTwistServer(_Pairing, TestCase):
    """V2Ray socks + vmess outbound with mux -> vtwist vmess inbound -> freedom."""

    LEVELS = (1, 8, 128)

    @classmethod
    def startV2Ray(cls) -> None:
        cls.vmess_port = free_port()
        cls.socks_ports: dict[int, int] = {}
        inbounds, outbounds, rules = [], [], []
        for c in cls.LEVELS:
            cls.socks_ports[c] = free_port()
            inbounds.append(socks_inbound(cls.socks_ports[c], f"in{c}"))
            outbounds.append(vmess_outbound(cls.vmess_port, c, f"out{c}"))
            rules.append({"type": "field", "inboundTag": [f"in{c}"], "outboundTag": f"out{c}"})
        cls.v2ray = V2Ray({"log": {"loglevel": "warning"}, "inbounds": inbounds,
                           "outbounds": outbounds, "routing": {"rules": rules}},
                          list(cls.socks_ports.values()))

    async def socksPort(self, concurrency: int = 8) -> int:
        service = await start_service({"log": {"loglevel": "warning"},
                                       "inbounds": [server_inbound(self.vmess_port)],
                                       "outbounds": [{"protocol": "freedom"}]}, self)
        self.factory = service.inbound_services[0].factory
        return self.socks_ports[concurrency]

    def carriers(self) -> int:
        return sum(n for key, n in self.factory.accepted.items() if key[2] == 3)

    async def test_concurrency_1(self) -> None:
        """concurrency 1: four parallel streams take four carriers."""
        port = await self.socksPort(1)
        pairs = await parallel_echo(port, self.echo.port, 4, 1024 * 1024)
        for sent, got in pairs:
            self.assertEqual(got, sent)
        self.assertEqual(self.carriers(), 4)

    async def test_concurrency_128(self) -> None:
        """concurrency 128: 100 parallel streams share one carrier."""
        port = await self.socksPort(128)
        pairs = await parallel_echo(port, self.echo.port, 100, 64 * 1024)
        for sent, got in pairs:
            self.assertEqual(got, sent)
        self.assertEqual(self.carriers(), 1)


class VTwistClientToV2RayServer(_Pairing, TestCase):
    """vtwist socks + vmess outbound with mux -> V2Ray vmess inbound -> freedom."""

    @classmethod
    def startV2Ray(cls) -> None:
        cls.vmess_port = free_port()
        cls.v2ray = V2Ray({"log": {"loglevel": "warning"},
                           "inbounds": [server_inbound(cls.vmess_port)],
                           "outbounds": [{"protocol": "freedom"}]}, [cls.vmess_port])

    async def socksPort(self, concurrency: int = 8) -> int:
        port = free_port()
        service = await start_service({"log": {"loglevel": "warning"},
                                       "inbounds": [socks_inbound(port)],
                                       "outbounds": [vmess_outbound(self.vmess_port,
                                                                    concurrency)]}, self)
        self.service = service
        return port

    def carriers(self) -> int:
        return pool_of(self.service).dialed


class VTwistToVTwist(_Pairing, TestCase):
    """vtwist client with mux -> vtwist server, both in this process."""

    size = EACH_PY

    async def socksPort(self, concurrency: int = 8) -> int:
        vmess_port, port = free_port(), free_port()
        server = await start_service({"log": {"loglevel": "warning"},
                                      "inbounds": [server_inbound(vmess_port)],
                                      "outbounds": [{"protocol": "freedom"}]}, self)
        self.factory = server.inbound_services[0].factory
        self.service = await start_service({"log": {"loglevel": "warning"},
                                            "inbounds": [socks_inbound(port)],
                                            "outbounds": [vmess_outbound(vmess_port,
                                                                         concurrency)]}, self)
        return port

    def carriers(self) -> int:
        server = sum(n for key, n in self.factory.accepted.items() if key[2] == 3)
        self.assertEqual(server, pool_of(self.service).dialed)
        return server


def pool_of(service: Any) -> Any:
    """The mux pool of a service's first outbound."""
    for outbound in service_outbounds(service):
        pool = getattr(outbound, "mux", None)
        if pool is not None:
            return pool
    raise AssertionError("no mux outbound")


def service_outbounds(service: Any) -> list[Any]:
    """The service's outbound objects."""
    dispatcher = service.dispatcher if hasattr(service, "dispatcher") else None
    outbounds = getattr(dispatcher, "outbounds", None)
    if outbounds is None:
        raise AssertionError(f"cannot find outbounds on {service!r}")
    return list(outbounds.values()) if isinstance(outbounds, dict) else list(outbounds)


class V2RayVLESSClientToVTwistServer(TestCase):
    """V2Ray socks + vless outbound with mux -> vtwist vless inbound (command 3) -> freedom."""

    timeout = 120

    def setUp(self) -> None:
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()
            cls.vless_port, cls.socks_port = free_port(), free_port()
            out = {"protocol": "vless", "mux": {"enabled": True, "concurrency": 8},
                   "settings": {"vnext": [{"address": "127.0.0.1", "port": cls.vless_port,
                                           "users": [{"id": USER, "encryption": "none"}]}]}}
            cls.v2ray = V2Ray({"log": {"loglevel": "warning"},
                               "inbounds": [socks_inbound(cls.socks_port)],
                               "outbounds": [out]}, [cls.socks_port])

    async def server(self) -> Any:
        service = await start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [{"port": self.vless_port, "listen": "127.0.0.1", "protocol": "vless",
                          "settings": {"clients": [{"id": USER}], "decryption": "none"}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        return service.inbound_services[0].factory

    async def test_parallel_streams(self) -> None:
        """Eight 4 MB transfers in one VLESS mux connection."""
        factory = await self.server()
        pairs = await parallel_echo(self.socks_port, self.echo.port, STREAMS, 4 * 1024 * 1024)
        for sent, got in pairs:
            self.assertEqual(got, sent)
        self.assertEqual(factory.accepted[3], 1)

    async def test_udp_echo(self) -> None:
        """UDP over VLESS mux."""
        await self.server()
        payloads = [b"abc", b"\x01" * 1500]
        got = await socks_udp_echo(reactor, self.socks_port, "127.0.0.1", self.echo.port,
                                   payloads)
        self.assertEqual(got, payloads)
