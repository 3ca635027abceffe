"""vtwist's 16 KiB VMess chunks read by the real V2Ray 4.34, in both roles.

V2Ray's own writer cuts 2 KiB chunks; vtwist sends up to 16 KiB (``body.MAX_SEND_CHUNK``).
Here V2Ray's readers take them:

* vtwist client -> V2Ray server: vtwist's request chunks go to V2Ray's server reader;
* V2Ray client -> vtwist server: vtwist's response chunks go to V2Ray's client reader.

Every security: aes-128-gcm, chacha20-poly1305 and none with the AEAD header (alterId 0)
and the legacy header (alterId 4), and the legacy body security (AES-CFB + FNV chunks):
vtwist's client sends it straight to V2Ray's server, and V2Ray's client uses it after
vtwist's server offers a detour (SwitchAccount), as 4.34 does. Each carries 20 MB each way
(4 x 5 MB for the detour), compared by sha256. A spy on the encoder proves the chunks sent
really were larger than anything V2Ray's writer makes (over 8192 bytes of payload, the
largest being ``none``'s 8192-byte slice) yet within 16384 bytes on the wire, and that
``chunkSize: 2048`` falls back to V2Ray's size.
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
from tests.interop.vmess_harness import explained, socks_echo
from tests.netutil import free_port
from tests.services import start_service
from vtwist.address import Destination
from vtwist.proxy.vmess.body import MAX_PADDING, SEC_LEGACY, BodyEncoder
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.users import Account, resolve_security

SECURITIES = ["aes-128-gcm", "chacha20-poly1305", "none"]
ALTER_IDS = [0, 4]
BIG = 20 * 1024 * 1024
#: the largest payload of one chunk V2Ray 4.34's writer makes (none security's slices)
V2RAY_LARGEST = 8192

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


def _vmess_inbound(port: int, **settings: Any) -> dict[str, Any]:
    return {"tag": "main", "port": port, "listen": "127.0.0.1", "protocol": "vmess",
            "settings": {"clients": [{"id": _user(alter, sec), "alterId": alter}
                                     for sec in ("", *SECURITIES) for alter in ALTER_IDS],
                         **settings}}


def _vmess_outbound(port: int, sec: str, alter: int, tag: str = "",
                    **settings: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"protocol": "vmess", "settings": {"vnext": [{
        "address": "127.0.0.1", "port": port,
        "users": [{"id": _user(alter, sec), "alterId": alter, "security": sec}]}], **settings}}
    if tag:
        out["tag"] = tag
    return out


def _socks_inbound(port: int, tag: str = "") -> dict[str, Any]:
    inbound: dict[str, Any] = {"port": port, "listen": "127.0.0.1", "protocol": "socks",
                               "settings": {"auth": "noauth"}}
    if tag:
        inbound["tag"] = tag
    return inbound


class _ChunkSpy:
    """Records (security, payload bytes, wire bound) of every chunk vtwist's encoders cut in
    this process; the wire bound (length field + sealed payload + largest padding) is at
    least the chunk's size on the wire."""

    def __init__(self, test: TestCase) -> None:
        self.chunks: list[tuple[int, int, int]] = []
        original = BodyEncoder._slices

        def slices(enc: BodyEncoder, data: Any) -> Any:
            result = original(enc, data)
            f = enc._f
            extra = 2 + f.overhead + (MAX_PADDING - 1 if f.padding else 0)
            self.chunks += [(f.security, len(p), len(p) + extra) for p in result]
            return result

        test.patch(BodyEncoder, "_slices", slices)

    def largest(self, security: int | None = None) -> int:
        """The largest payload of one chunk (any chunk over 8192 bytes of payload is larger
        than any chunk V2Ray's writer makes)."""
        sizes = [n for s, n, _ in self.chunks if security is None or s == security]
        return max(sizes, default=0)

    def bound(self) -> int:
        """An upper bound on the largest chunk's size on the wire."""
        return max((b for _, _, b in self.chunks), default=0)


class _EchoClient(protocol.Protocol):
    """Sends ``size`` random bytes, hashes what the echo server sends back."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = hashlib.sha256()
        self.got = hashlib.sha256()
        self.received = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        block = os.urandom(1 << 20)
        left = self.size
        i = 0
        while left:
            piece = i.to_bytes(4, "big") + block[4:min(len(block), left)]
            self.sent.update(piece)
            self.transport.write(piece)
            left -= len(piece)
            i += 1

    def dataReceived(self, data: bytes) -> None:
        self.got.update(data)
        self.received += len(data)
        if self.received >= self.size and not self.done.called:
            self.done.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(RuntimeError(f"closed after {self.received} bytes: {reason}"))


class LargeChunksToV2RayServer(TestCase):
    """vtwist client (16 KiB request chunks) -> V2Ray 4.34 server -> freedom -> echo."""

    timeout = 120

    def setUp(self) -> None:
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()
            cls.vmess_port = free_port()
            cls.v2ray = V2Ray({"log": {"loglevel": "warning"},
                               "inbounds": [_vmess_inbound(cls.vmess_port)],
                               "outbounds": [{"protocol": "freedom"}]}, [cls.vmess_port])
        self.spy = _ChunkSpy(self)

    async def through(self, sec: str, alter: int, **settings: Any) -> None:
        socks = free_port()
        await start_service({"log": {"loglevel": "warning"},
                             "inbounds": [_socks_inbound(socks)],
                             "outbounds": [_vmess_outbound(self.vmess_port, sec, alter,
                                                           **settings)]}, self)
        sent, got, _ = await explained(socks_echo(reactor, socks, "127.0.0.1", self.echo.port,
                                                  BIG), self.v2ray)
        self.assertEqual(got, sent, f"{sec} alterId {alter}: data differs")

    async def test_legacy_body_security(self) -> None:
        """AES-CFB + FNV chunks (what a client uses after a detour), alterId 4."""
        account = Account.from_text(U4, alter_id=4)
        ep = VMessClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", self.vmess_port),
                                 account, Destination.tcp("127.0.0.1", self.echo.port),
                                 security=SEC_LEGACY, reactor=reactor)
        client = _EchoClient(BIG)
        await ep.connect(protocol.Factory.forProtocol(lambda: client))
        await client.done.addTimeout(90, reactor)
        client.transport.loseConnection()
        self.assertEqual(client.got.hexdigest(), client.sent.hexdigest())
        self.assertGreater(self.spy.largest(SEC_LEGACY), V2RAY_LARGEST)

    async def test_chunk_size_2048_falls_back_to_v2ray_size(self) -> None:
        await self.through("aes-128-gcm", 0, chunkSize=2048)
        self.assertTrue(self.spy.chunks)
        self.assertLessEqual(self.spy.bound(), 2048)


class LargeChunksFromVTwistServer(TestCase):
    """V2Ray 4.34 client -> vtwist server (16 KiB response chunks) -> freedom -> echo.

    Each transfer has a V2Ray client of its own: a client kept for the class carries its
    state from test to test (and under ``-j2`` through long pauses while the class's port
    has no server)."""

    timeout = 120

    def setUp(self) -> None:
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()
        self.spy = _ChunkSpy(self)

    async def through(self, sec: str, alter: int) -> None:
        server = free_port()  # the test's own (a class's port is free between its tests)
        await start_service({"log": {"loglevel": "warning"},
                             "inbounds": [_vmess_inbound(server)],
                             "outbounds": [{"protocol": "freedom"}]}, self)
        socks = free_port()
        v2ray = V2Ray({"log": {"loglevel": "info"}, "inbounds": [_socks_inbound(socks)],
                       "outbounds": [_vmess_outbound(server, sec, alter)]},
                      wait_ports=[socks])
        self.addCleanup(v2ray.stop)
        sent, got, _ = await explained(socks_echo(reactor, socks, "127.0.0.1", self.echo.port,
                                                  BIG), v2ray)
        self.assertEqual(got, sent, f"{sec} alterId {alter}: data differs")

    async def test_legacy_body_security_after_detour(self) -> None:
        """V2Ray's client takes vtwist's detour offer: legacy body security (alterId 4) on
        the dynamic port, 16 KiB AES-CFB + FNV response chunks to its reader."""
        port, socks, dyn = free_port(), free_port(), free_port()
        await start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [
                _vmess_inbound(port, detour={"to": "dynamicPort"}),
                {"port": f"{dyn}-{dyn + 9}", "listen": "127.0.0.1", "protocol": "vmess",
                 "tag": "dynamicPort", "settings": {"default": {"alterId": 4}},
                 "allocate": {"strategy": "random", "concurrency": 2, "refresh": 5}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        v = V2Ray({"log": {"loglevel": "warning"}, "inbounds": [_socks_inbound(socks)],
                   "outbounds": [_vmess_outbound(port, "aes-128-gcm", 0)]},
                  wait_ports=[socks])
        self.addCleanup(v.stop)
        for _ in range(4):  # the configured server and the offer, in turn
            sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", self.echo.port,
                                            5 * 1024 * 1024)
            self.assertEqual(got, sent)
            if self.spy.largest(SEC_LEGACY) > V2RAY_LARGEST:
                break
        self.assertGreater(self.spy.largest(SEC_LEGACY), V2RAY_LARGEST, v.output())


def _matrix(cls: type, test_name: str) -> None:
    for sec in SECURITIES:
        for alter in ALTER_IDS:
            async def big(self: Any, sec: str = sec, alter: int = alter) -> None:
                await self.through(sec, alter)
                wire = resolve_security(sec)
                self.assertGreater(self.spy.largest(wire), V2RAY_LARGEST,
                                   f"{sec}: no chunk larger than V2Ray's")
                self.assertLessEqual(self.spy.bound(), 16384)
            big.__name__ = f"test_{test_name}_{_combo(sec, alter)}"
            setattr(cls, big.__name__, big)


_matrix(LargeChunksToV2RayServer, "request_20mb")
_matrix(LargeChunksFromVTwistServer, "response_20mb")
