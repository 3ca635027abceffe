"""Mux.Cool interop against the real V2Ray 4.34 on loopback, and vtwist <-> vtwist.

``socks -> vmess/vless client (mux on) == one carrier == server -> freedom -> echo``

Pairings: V2Ray client with mux -> vtwist server, vtwist client with mux -> V2Ray server,
vtwist client -> vtwist server; VMess over tcp, ws+tls and kcp+dtls, VLESS over tcp. Each
checks parallel transfers in one carrier (sha256 both ways; 20 MB each over tcp, less over
the slower transports), 200 short connections sharing carriers (the carriers counted on the
server side where vtwist is the server, on the client's pool otherwise), a UDP echo through
UDP ASSOCIATE over mux, and that aborting one stream mid-transfer leaves the others intact.
The V2Ray client also runs with concurrency 1 and 128. The suite fails (never skips)
without /usr/bin/v2ray.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import uuid
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from tests.interop.kcp_support import kcp_settings
from tests.interop.transport_support import TransportFixture
from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import SocksStream, explained, socks_echo, socks_udp_echo
from tests.netutil import (
    free_port,
    reactor_connections,
    wait_for_port,
    wait_for_udp_bound,
    wait_until,
)
from tests.services import start_service
from vtwist.transport.kcp.endpoints import KCPClientEndpoint
from vtwist.transport.kcp.protocol import KCPClientProtocol

USER = str(uuid.uuid4())
#: parallel streams in one carrier, and the bytes each sends (and gets back)
STREAMS = 8
EACH = 20 * 1024 * 1024
EACH_PY = 6 * 1024 * 1024  # vtwist <-> vtwist: both ends in this process
SHORT = 200


_FIXTURE: list[TransportFixture] = []


def fixture() -> TransportFixture:
    """The certificates for the TLS pairings (made once, removed at exit)."""
    if not _FIXTURE:
        _FIXTURE.append(TransportFixture())
        atexit.register(_FIXTURE[0].cleanup)
    return _FIXTURE[0]


@dataclass(frozen=True)
class Kind:
    """A transport the carriers ride: its streamSettings and how big the transfers are."""

    name: str
    size: int
    size_py: int

    @property
    def udp(self) -> bool:
        return self.name == "kcp"

    def stream(self, inbound: bool) -> dict[str, Any] | None:
        """streamSettings for a server (inbound) or a client (outbound)."""
        if self.name == "tcp":
            return None
        if self.name == "kcp":
            return {"network": "kcp", "kcpSettings": kcp_settings("dtls")}
        return fixture().settings("wss", inbound)

    def server_port(self) -> int:
        return free_port(udp_too=self.udp)

    def wait(self, proc: V2Ray, port: int) -> None:
        """Until V2Ray serves ``port``."""
        if self.udp:
            wait_for_udp_bound(port, timeout=10, alive=proc.check_alive)
        else:
            wait_for_port(port, timeout=10, alive=proc.check_alive)


TCP = Kind("tcp", EACH, EACH_PY)
WSS = Kind("wss", 4 * 1024 * 1024, 2 * 1024 * 1024)
KCP = Kind("kcp", 2 * 1024 * 1024, 1024 * 1024)


def server_inbound(port: int, kind: Kind = TCP, protocol: str = "vmess") -> dict[str, Any]:
    if protocol == "vless":
        settings: dict[str, Any] = {"clients": [{"id": USER, "email": "mux@test"}],
                                    "decryption": "none"}
    else:
        settings = {"clients": [{"id": USER, "alterId": 0, "email": "mux@test"}]}
    inbound: dict[str, Any] = {"port": port, "listen": "127.0.0.1", "protocol": protocol,
                               "settings": settings}
    stream = kind.stream(True)
    if stream is not None:
        inbound["streamSettings"] = stream
    return inbound


def vmess_outbound(port: int, concurrency: int | None = 8, tag: str = "", kind: Kind = TCP,
                   protocol: str = "vmess") -> dict[str, Any]:
    if protocol == "vless":
        user: dict[str, Any] = {"id": USER, "encryption": "none"}
    else:
        user = {"id": USER, "alterId": 0, "security": "aes-128-gcm"}
    out: dict[str, Any] = {"protocol": protocol, "settings": {"vnext": [{
        "address": "127.0.0.1", "port": port, "users": [user]}]}}
    if concurrency is not None:
        out["mux"] = {"enabled": True, "concurrency": concurrency}
    if tag:
        out["tag"] = tag
    stream = kind.stream(False)
    if stream is not None:
        out["streamSettings"] = stream
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


def target_sockets(echo_port: int) -> list[Any]:
    """This process's sockets to the echo server: the freedom side of live sessions."""
    found = []
    for s in set(reactor.getReaders()) | set(reactor.getWriters()):
        proto = getattr(s, "protocol", None)
        if type(proto).__module__ == "vtwist.proxy.freedom.outbound":
            found.append(s)  # a freedom UDP socket
            continue
        try:
            peer = s.getPeer()
        except Exception:  # noqa: BLE001 - not a connection
            continue
        if getattr(peer, "port", None) == echo_port:
            found.append(s)
    return found


def sockets_on(port: int) -> list[Any]:
    """This process's connections accepted on ``port`` (a server's carriers)."""
    return reactor_connections(lambda host, peer: getattr(host, "port", None) == port
                               and getattr(peer, "port", None) != port)


def kcp_left() -> list[Any]:
    """mKCP client sockets and session timers still running in this process."""
    left: list[Any] = [s for s in set(reactor.getReaders())
                       if isinstance(getattr(s, "protocol", None), KCPClientProtocol)]
    left += [c for c in reactor.getDelayedCalls()
             if getattr(c.func, "__qualname__", "").startswith("KCP")]
    return left


class _Pairing:
    """The tests every pairing runs (a mixin: a concrete class adds TestCase)."""

    timeout = 300
    echo: EchoServer
    kind: Kind = TCP
    protocol = "vmess"

    @property
    def size(self) -> int:
        return self.kind.size

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

    def explained(self, transfer: Any) -> Any:
        """``transfer``, failing with what vtwist and the class's V2Ray (if any) logged."""
        return explained(transfer, getattr(self, "v2ray", None))

    def waitForSessionsToEnd(self) -> None:
        """At cleanup, before the services stop: wait until the server's sessions closed
        their targets (a V2Ray client ends its sessions a little after the test's
        connections; a UDP session 4 s after its last answer)."""
        async def wait() -> None:
            await wait_until(lambda: not self.openTargets(),
                             lambda: f"sessions still open: {self.openTargets()}", 30)
        self.addCleanup(lambda: defer.ensureDeferred(wait()))

    def openTargets(self) -> list[Any]:
        """The server's sockets to the echo server that should have closed by now."""
        return target_sockets(self.echo.port)

    def waitForKCP(self) -> None:
        """mKCP: closed sessions linger 0.3 s (not V2Ray's 8 s) repeating TERMINATE; at
        cleanup, wait until they are gone."""
        if not self.kind.udp:
            return
        original = KCPClientEndpoint.__init__

        def short_linger(endpoint: KCPClientEndpoint, *a: Any, **kw: Any) -> None:
            original(endpoint, *a, **kw)
            endpoint.linger = 0.3
        self.patch(KCPClientEndpoint, "__init__", short_linger)

        async def wait() -> None:
            await wait_until(lambda: not kcp_left(), lambda: f"mKCP still on: {kcp_left()}",
                             30)
        self.addCleanup(lambda: defer.ensureDeferred(wait()))

    def waitForCarriersToClose(self, port: int) -> None:
        """At cleanup, after the server stopped: wait until its carriers are closed (over
        TLS or WebSocket a close takes a round trip)."""
        async def wait() -> None:
            await wait_until(lambda: not sockets_on(port),
                             lambda: f"carriers still open: {sockets_on(port)}", 30)
        self.addCleanup(lambda: defer.ensureDeferred(wait()))

    def carriers(self) -> int:
        """How many mux carriers carried this test's traffic."""
        raise NotImplementedError

    async def test_parallel_streams(self) -> None:
        """Eight transfers at once in one carrier, sha256 each way."""
        port = await self.socksPort()
        pairs = await self.explained(parallel_echo(port, self.echo.port, STREAMS, self.size))
        for sent, got in pairs:
            self.assertEqual(got, sent)
        self.assertEqual(self.carriers(), 1)

    async def test_short_connections_reuse(self) -> None:
        """200 short connections in a row share carriers (128 sessions each, at most)."""
        port = await self.socksPort()
        await self.explained(short_connections(port, self.echo.port, SHORT))
        self.assertEqual(self.carriers(), 2)

    async def test_udp_echo(self) -> None:
        """UDP ASSOCIATE through a mux outbound: a UDP session per destination."""
        port = await self.socksPort()
        payloads = [b"abc", bytes(range(200)), b"\x5a" * 2000]
        got = await self.explained(socks_udp_echo(reactor, port, "127.0.0.1", self.echo.port,
                                                  payloads))
        self.assertEqual(got, payloads)

    async def test_isolation(self) -> None:
        """Aborting one stream mid-transfer leaves the other seven intact."""
        port = await self.socksPort()
        await self.explained(isolation(self, port, self.echo.port,
                                       min(self.size, 2 * 1024 * 1024)))


def server_carriers(factory: Any) -> int:
    """Mux connections a vtwist VMess or VLESS server accepted."""
    if isinstance(next(iter(factory.accepted), None), tuple):
        return sum(n for key, n in factory.accepted.items() if key[2] == 3)
    return factory.accepted[3]


class _V2RayClientToVTwistServer(_Pairing):
    """V2Ray socks + vmess/vless outbound with mux -> vtwist inbound -> freedom.

    Each test has a V2Ray client of its own, stopped after the test's server: a client kept
    for the class keeps its mux carriers across tests, and one that still sends while no
    server listens (between tests) can reuse a carrier the next test's server cannot
    answer (over mKCP, V2Ray's reader stops for good at the ICMP "port unreachable"): a CI
    run lost the first of 200 short connections to that after a long pause of the class.
    """

    LEVELS: tuple[int, ...] = (8,)

    def startClient(self) -> None:
        """This test's V2Ray client (stopped at cleanup, after the server), and fresh ports
        for it and the server (a port kept for the class is free between its tests, and
        another test process may take it)."""
        self.server_port = self.kind.server_port()
        self.socks_ports = {c: free_port() for c in self.LEVELS}
        inbounds, outbounds, rules = [], [], []
        for c in self.LEVELS:
            inbounds.append(socks_inbound(self.socks_ports[c], f"in{c}"))
            outbounds.append(vmess_outbound(self.server_port, c, f"out{c}", self.kind,
                                            self.protocol))
            rules.append({"type": "field", "inboundTag": [f"in{c}"], "outboundTag": f"out{c}"})
        self.v2ray = V2Ray({"log": {"loglevel": "info"}, "inbounds": inbounds,
                            "outbounds": outbounds, "routing": {"rules": rules}},
                           list(self.socks_ports.values()))
        self.addCleanup(self.v2ray.stop)

    async def socksPort(self, concurrency: int = 8) -> int:
        self.startClient()
        self.waitForCarriersToClose(self.server_port)
        service = await start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [server_inbound(self.server_port, self.kind, self.protocol)],
            "outbounds": [{"protocol": "freedom"}]}, self)
        self.factory = service.inbound_services[0].factory
        self.waitForSessionsToEnd()
        return self.socks_ports[concurrency]

    def carriers(self) -> int:
        return server_carriers(self.factory)

    def openTargets(self) -> list[Any]:
        """As the base, less the sessions V2Ray's client still holds: now and then (about
        one isolation run in 12 to 50, VMess and VLESS alike) V2Ray 4.34's client never
        sends End for the stream the test aborted, and keeps its carrier open; the session
        then lives, on the server as in V2Ray's own, until connIdle."""
        return [s for s in super().openTargets() if not held_by_client(s)]


def held_by_client(socket: Any) -> bool:
    """A target socket whose mux session the client has not ended (no End frame came and
    the carrier is open): not the server's to close."""
    relay = getattr(getattr(socket, "protocol", None), "relay", None)
    if relay is None or relay.finished:
        return False
    stream = relay.transports[0]
    return (hasattr(stream, "gotEnd") and not stream.gotEnd
            and not getattr(stream.conn, "closed", True))


class V2RayClientToVTwistServer(_V2RayClientToVTwistServer, TestCase):
    """Over tcp, with V2Ray's concurrency 1, 8 and 128."""

    LEVELS = (1, 8, 128)

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


class _VTwistClientToV2RayServer(_Pairing):
    """vtwist socks + vmess/vless outbound with mux -> V2Ray inbound -> freedom."""

    @classmethod
    def startV2Ray(cls) -> None:
        cls.server_port = cls.kind.server_port()
        cls.v2ray = V2Ray({"log": {"loglevel": "info"},
                           "inbounds": [server_inbound(cls.server_port, cls.kind,
                                                       cls.protocol)],
                           "outbounds": [{"protocol": "freedom"}]})
        try:
            cls.kind.wait(cls.v2ray, cls.server_port)
        except BaseException:
            cls.v2ray.stop()
            raise

    async def socksPort(self, concurrency: int = 8) -> int:
        port = free_port()
        self.waitForKCP()
        service = await start_service({
            "log": {"loglevel": "warning"}, "inbounds": [socks_inbound(port)],
            "outbounds": [vmess_outbound(self.server_port, concurrency, kind=self.kind,
                                         protocol=self.protocol)]}, self)
        self.service = service
        return port

    def carriers(self) -> int:
        return pool_of(self.service).dialed


class _VTwistToVTwist(_Pairing):
    """vtwist client with mux -> vtwist server, both in this process."""

    @property
    def size(self) -> int:
        return self.kind.size_py

    async def socksPort(self, concurrency: int = 8) -> int:
        server_port, port = self.kind.server_port(), free_port()
        self.waitForCarriersToClose(server_port)
        self.waitForKCP()
        server = await start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [server_inbound(server_port, self.kind, self.protocol)],
            "outbounds": [{"protocol": "freedom"}]}, self)
        self.factory = server.inbound_services[0].factory
        self.service = await start_service({
            "log": {"loglevel": "warning"}, "inbounds": [socks_inbound(port)],
            "outbounds": [vmess_outbound(server_port, concurrency, kind=self.kind,
                                         protocol=self.protocol)]}, self)
        self.waitForSessionsToEnd()
        return port

    def carriers(self) -> int:
        server = server_carriers(self.factory)
        self.assertEqual(server, pool_of(self.service).dialed)
        return server


class VTwistClientToV2RayServer(_VTwistClientToV2RayServer, TestCase):
    """VMess over tcp."""


class VTwistToVTwist(_VTwistToVTwist, TestCase):
    """VMess over tcp."""


def _pairings() -> None:
    """The same pairings over ws+tls and kcp+dtls (VMess), and VLESS over tcp."""
    bases = {"V2RayClientToVTwistServer": _V2RayClientToVTwistServer,
             "VTwistClientToV2RayServer": _VTwistClientToV2RayServer,
             "VTwistToVTwist": _VTwistToVTwist}
    for name, base in bases.items():
        for kind, label in ((WSS, "WSTLS"), (KCP, "KCPDTLS")):
            cls_name = f"{name}Over{label}"
            globals()[cls_name] = type(cls_name, (base, TestCase), {
                "kind": kind, "__doc__": f"{base.__doc__} Over {kind.name}.",
                "__module__": __name__})
        cls_name = f"VLESS{name}"
        globals()[cls_name] = type(cls_name, (base, TestCase), {
            "protocol": "vless", "kind": Kind("tcp", 4 * 1024 * 1024, 2 * 1024 * 1024),
            "__doc__": f"{base.__doc__} VLESS over tcp.", "__module__": __name__})


_pairings()


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
