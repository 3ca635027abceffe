"""VMess interop against the real V2Ray 4.34 on loopback.

Three pairings, each carrying traffic from a SOCKS5 client through
``socks -> vmess client == TCP == vmess server -> freedom -> echo server``:

* vtwist client -> V2Ray server
* V2Ray client -> vtwist server
* vtwist client -> vtwist server

For every security (aes-128-gcm, chacha20-poly1305, none, auto) and alterId 0 (AEAD
header) and 4 (legacy header): 20 MB each way, compared by sha256. Per pairing also a
domain target, an IPv6 (::1) target and a UDP echo through UDP ASSOCIATE.

One V2Ray server serves the vtwist-client class (a VMess inbound for every user); the
V2Ray-client pairing starts a V2Ray client (one SOCKS inbound, the test's VMess outbound)
and a vtwist server on fresh ports per test: a port kept for a class is free between its
tests, and another test process may take it. The vtwist side runs in the test process from
the same JSON configs.
The suite fails (never skips) when /usr/bin/v2ray is missing.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port
from tests.services import start_service
from vtwist.proxy.vmess.users import resolve_security

SECURITIES = ["aes-128-gcm", "chacha20-poly1305", "none", "auto"]
ALTER_IDS = [0, 4]
BIG = 20 * 1024 * 1024
SMALL = 256 * 1024

U0 = str(uuid.uuid4())  # alterId 0: AEAD header
U4 = str(uuid.uuid4())  # alterId 4: legacy header


def _user(alter: int, sec: str = "") -> str:
    """The user of one (security, alterId) combination: V2Ray's outbounds then never share a
    user id (with shared ids, a CI run saw one test's header security on another's server)."""
    if not sec:
        return U0 if alter == 0 else U4
    return str(uuid.uuid5(uuid.UUID(U0 if alter == 0 else U4), sec))


def _combo(sec: str, alter: int) -> str:
    return f"{sec.replace('-', '_')}_alter{alter}"


def _server_inbound(port: int, tag: str = "vmess-in") -> dict[str, Any]:
    return {"tag": tag, "port": port, "listen": "127.0.0.1", "protocol": "vmess",
            "settings": {"clients": [
                {"id": _user(alter, sec), "alterId": alter, "email": f"{_combo(sec, alter)}@test"}
                for sec in ("", *SECURITIES) for alter in ALTER_IDS]}}


def _vmess_outbound(port: int, sec: str, alter: int, tag: str = "") -> dict[str, Any]:
    out = {"protocol": "vmess", "settings": {"vnext": [{
        "address": "127.0.0.1", "port": port,
        "users": [{"id": _user(alter, sec), "alterId": alter, "security": sec}]}]}}
    if tag:
        out["tag"] = tag
    return out


def _socks_inbound(port: int, tag: str = "") -> dict[str, Any]:
    inbound = {"port": port, "listen": "127.0.0.1", "protocol": "socks",
               "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}}
    if tag:
        inbound["tag"] = tag
    return inbound


class _Pairing(TestCase):
    """Shared machinery: an echo server; subclasses add V2Ray and vtwist sides."""

    timeout = 120
    echo: EchoServer
    v2ray: V2Ray | None = None

    def setUp(self) -> None:
        # trial has no setUpClass: start the class's processes on first use; they are
        # killed at exit (and die with this process).
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()
            cls.startV2Ray()

    @classmethod
    def startV2Ray(cls) -> None:
        """Start the class's V2Ray process (if it needs one)."""

    async def vtwist(self, config: dict[str, Any]) -> Any:
        return await start_service(config, self)

    async def socksPort(self, sec: str, alter: int) -> int:
        """The SOCKS port whose traffic uses (sec, alter) for this pairing."""
        raise NotImplementedError

    async def check_tcp(self, sec: str, alter: int, host: str, size: int) -> None:
        port = await self.socksPort(sec, alter)
        sent, got, seconds = await socks_echo(reactor, port, host, self.echo.port, size)
        self.assertEqual(got, sent, f"{sec} alterId {alter}: data differs")

    async def check_udp(self, sec: str, alter: int, host: str) -> None:
        port = await self.socksPort(sec, alter)
        payloads = [b"abc", bytes(range(150)), b"\xa5" * 1024]
        got = await socks_udp_echo(reactor, port, host, self.echo.port, payloads)
        self.assertEqual(got, payloads)


def _matrix(cls: type) -> type:
    """Add test_tcp_20mb_<security>_alter<n> and per-target tests to a pairing class."""
    for sec in SECURITIES:
        for alter in ALTER_IDS:
            def big(self: _Pairing, sec: str = sec, alter: int = alter) -> Any:
                return defer.ensureDeferred(self.check_tcp(sec, alter, "127.0.0.1", BIG))
            big.__name__ = f"test_tcp_20mb_{_combo(sec, alter)}"
            setattr(cls, big.__name__, big)

    def domain(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_tcp("aes-128-gcm", 0, "localhost", SMALL))

    def ipv6(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_tcp("aes-128-gcm", 0, "::1", SMALL))

    def ipv6_legacy(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_tcp("chacha20-poly1305", 4, "::1", SMALL))

    def udp(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_udp("aes-128-gcm", 0, "127.0.0.1"))

    def udp_legacy_none(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_udp("none", 4, "127.0.0.1"))

    def udp_ipv6(self: _Pairing) -> Any:
        return defer.ensureDeferred(self.check_udp("chacha20-poly1305", 0, "::1"))

    for f, name in ((domain, "test_domain_target"), (ipv6, "test_ipv6_target"),
                    (ipv6_legacy, "test_ipv6_target_legacy"), (udp, "test_udp_echo"),
                    (udp_legacy_none, "test_udp_echo_legacy_none"),
                    (udp_ipv6, "test_udp_echo_ipv6")):
        f.__name__ = name
        setattr(cls, name, f)
    return cls


@_matrix
class VTwistClientToV2RayServer(_Pairing):
    """vtwist SOCKS + VMess outbound -> V2Ray VMess inbound -> freedom."""

    @classmethod
    def startV2Ray(cls) -> None:
        cls.vmess_port = free_port()
        cls.v2ray = V2Ray({"log": {"loglevel": "warning"},
                           "inbounds": [_server_inbound(cls.vmess_port)],
                           "outbounds": [{"protocol": "freedom"}]}, [cls.vmess_port])

    async def socksPort(self, sec: str, alter: int) -> int:
        port = free_port()
        await self.vtwist({"log": {"loglevel": "warning"},
                           "inbounds": [_socks_inbound(port)],
                           "outbounds": [_vmess_outbound(self.vmess_port, sec, alter)]})
        return port


@_matrix
class V2RayClientToVTwistServer(_Pairing):
    """V2Ray SOCKS + VMess outbound -> vtwist VMess inbound -> freedom."""

    async def socksPort(self, sec: str, alter: int) -> int:
        # A server port and a V2Ray client for this test alone: a port kept for the class
        # is free between its tests, and under -j2 another test process can take it then
        # (a CI run met "Address already in use" restarting the server on it).
        server = free_port()
        service = await self.vtwist({"log": {"loglevel": "warning"},
                                     "inbounds": [_server_inbound(server)],
                                     "outbounds": [{"protocol": "freedom"}]})
        self.server_factory = service.inbound_services[0].factory
        socks = free_port()
        v2ray = V2Ray({"log": {"loglevel": "warning"}, "inbounds": [_socks_inbound(socks)],
                       "outbounds": [_vmess_outbound(server, sec, alter)]}, [socks])
        self.addCleanup(v2ray.stop)
        return socks

    async def check_tcp(self, sec: str, alter: int, host: str, size: int) -> None:
        await super().check_tcp(sec, alter, host, size)
        self.assertSeen(sec, alter, 1)

    async def check_udp(self, sec: str, alter: int, host: str) -> None:
        await super().check_udp(sec, alter, host)
        self.assertSeen(sec, alter, 2)

    def assertSeen(self, sec: str, alter: int, command: int) -> None:
        """The real V2Ray client used the header mode and security we configured."""
        wire = resolve_security(sec)  # "auto" as 4.34 resolves it on this machine
        seen = dict(self.server_factory.accepted)
        self.assertIn((alter == 0, wire, command), seen)


@_matrix
class VTwistToVTwist(_Pairing):
    """vtwist SOCKS + VMess outbound -> vtwist VMess inbound -> freedom."""

    async def socksPort(self, sec: str, alter: int) -> int:
        vmess_port, socks_port = free_port(), free_port()
        await self.vtwist({"log": {"loglevel": "warning"},
                           "inbounds": [_server_inbound(vmess_port)],
                           "outbounds": [{"protocol": "freedom"}]})
        await self.vtwist({"log": {"loglevel": "warning"},
                           "inbounds": [_socks_inbound(socks_port)],
                           "outbounds": [_vmess_outbound(vmess_port, sec, alter)]})
        return socks_port
