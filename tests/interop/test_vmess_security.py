"""VMess server hardening on real loopback sockets, partly against the real V2Ray client.

* probes (random bytes of every length, mutated real headers) get no byte back and a FIN
  (never a reset) after a bounded random delay, while a real client is served;
* a request recorded from the real V2Ray 4.34 client, replayed, is refused;
* clock skew: 119 s accepted, 125 s refused, with the real V2Ray client;
* 1,000 users on one port (V2Ray client using the last one);
* resident memory of an idle VMess connection in a separate vtwist process.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.interop.v2ray_runner import EchoServer, Subprocess, V2Ray
from tests.interop.vmess_harness import socks_echo
from tests.netutil import free_port, wait_for_port
from vtwist.address import Destination
from vtwist.policy import LevelPolicy, Policy
from vtwist.proxy.freedom.outbound import FreedomOutbound
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.handshake import ClientSession
from vtwist.proxy.vmess.server import ProbeGuard, VMessServerFactory, VMessServerState
from vtwist.proxy.vmess.users import Account
from vtwist.testing.doubles import Collector, Echo
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.service import TunnelService


@implementer(IHalfCloseableProtocol)
class Probe(protocol.Protocol):
    """Sends junk, never closes first; records bytes received and how it ended."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = b""
        self.fin_at: float | None = None
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.start = 0.0

    def connectionMade(self) -> None:
        self.start = time.monotonic()
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.fin_at = time.monotonic() - self.start
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        self.ended.callback([reason])


class Recorder(protocol.Protocol):
    """Keeps everything a client sends and never answers."""

    def __init__(self, store: list[bytes]) -> None:
        self.store = store

    def dataReceived(self, data: bytes) -> None:
        self.store.append(data)


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def close_all(factory: VMessServerFactory) -> None:
    """Abort the server's remaining connections and let the reactor settle."""
    for _ in range(200):
        if not factory.protocols:
            break
        for p in list(factory.protocols):
            p.transport.abortConnection()
        await sleep(0.01)
    await sleep(0.05)


def _v2ray_client(socks_port: int, server_port: int, user: str, alter: int = 0,
                  security: str = "aes-128-gcm") -> V2Ray:
    return V2Ray({"log": {"loglevel": "warning"},
                  "inbounds": [{"port": socks_port, "listen": "127.0.0.1", "protocol": "socks",
                                "settings": {"auth": "noauth"}}],
                  "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
                      "address": "127.0.0.1", "port": server_port,
                      "users": [{"id": user, "alterId": alter, "security": security}]}]}}]},
                 [socks_port])


HANDSHAKE = 0.5


class VMessSecurity(TestCase):
    timeout = 90

    def setUp(self) -> None:
        self.account = Account(os.urandom(16), email="probe-test")
        self.guard = ProbeGuard(min_delay=0.2, max_delay=0.6, linger=3, max_held=10_000)

    async def listen(self, accounts: list[Account] | None = None, now: Any = None,
                     guard: ProbeGuard | None = None) -> tuple[VMessServerFactory, int]:
        state = VMessServerState(accounts or [self.account], guard=guard or self.guard)
        factory = VMessServerFactory(state, TunnelService(Dispatcher([FreedomOutbound(reactor)]),
                                                          reactor),
                                     policy=Policy({0: LevelPolicy(handshake=HANDSHAKE)}),
                                     now=now)
        port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory)
        self.addCleanup(lambda: defer.ensureDeferred(close_all(factory)))
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    async def echo_target(self) -> int:
        port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def roundtrip(self, server_port: int, echo_port: int, payload: bytes) -> bytes:
        ep = VMessClientEndpoint(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", server_port), self.account,
            Destination.tcp("127.0.0.1", echo_port), reactor=reactor)
        c = await ep.connect(protocol.Factory.forProtocol(Collector))
        c.transport.write(payload)
        await c.wait(len(payload)).addTimeout(10, reactor)
        c.transport.loseConnection()
        return bytes(c.buf)

    # -- probes --------------------------------------------------------------------------
    async def _probes(self) -> None:
        factory, port = await self.listen()
        echo_port = await self.echo_target()
        rng = random.Random(3)
        probes = []
        for i in range(80):
            if i % 2:
                data = rng.randbytes(rng.choice([10, 100, 1500, 2100, 5000, 20000, 65536]))
            else:
                header = bytearray(ClientSession(self.account, Destination.tcp("a.b", 1),
                                                 aead=i % 4 == 0).request_header(time.time()))
                header[rng.randrange(len(header))] ^= 0xFF
                data = bytes(header) + rng.randbytes(rng.randint(0, 4000))
            p = Probe(data)
            probes.append(p)
            await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                protocol.Factory.forProtocol(lambda p=p: p))
        # a real client is served while the probes are held
        self.assertEqual(await self.roundtrip(port, echo_port, b"real client"), b"real client")
        reasons = [r[0] for r in await defer.gatherResults([p.ended for p in probes])]
        for p, reason in zip(probes, reasons, strict=True):
            self.assertEqual(p.received, b"", len(p.data))
            self.assertTrue(reason.check(ConnectionDone), (len(p.data), reason))  # FIN, no RST
            self.assertIsNotNone(p.fin_at)
            # handshake deadline + [0.2, 0.6] s, whatever the probe's length or content
            self.assertGreaterEqual(p.fin_at, HANDSHAKE + 0.15, len(p.data))
            self.assertLess(p.fin_at, HANDSHAKE + 0.6 + 3.0, len(p.data))  # slack for CI load
        self.assertEqual(factory.refused, 80)
        for _ in range(100):
            if not factory.state.guard.held:
                break
            await sleep(0.02)
        self.assertEqual(factory.state.guard.held, 0)

    def test_probes_get_nothing_and_a_fin(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._probes())

    async def _short_probe_held_until_deadline(self) -> None:
        # Fewer than 16 bytes: no verdict until the handshake deadline, then the same FIN.
        factory, port = await self.listen()
        p = Probe(b"GET")
        await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(lambda: p))
        [reason] = await p.ended
        self.assertTrue(reason.check(ConnectionDone))
        self.assertEqual(p.received, b"")
        self.assertGreaterEqual(p.fin_at, HANDSHAKE + 0.15)

    def test_short_probe(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._short_probe_held_until_deadline())

    # -- replay of a request recorded from the real V2Ray client ---------------------------
    async def _replay(self) -> None:
        recorded: list[bytes] = []
        rec = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(lambda: Recorder(recorded)))
        self.addCleanup(rec.stopListening)
        echo_port = await self.echo_target()
        socks_port = free_port()
        v2 = _v2ray_client(socks_port, rec.getHost().port, self.account.uuid_text)
        self.addCleanup(v2.stop)
        d = defer.ensureDeferred(socks_echo(reactor, socks_port, "127.0.0.1", echo_port, 1000,
                                            timeout=1.5))
        try:
            await d
        except (RuntimeError, defer.TimeoutError, defer.CancelledError):
            pass  # the recorder never answers
        wire = b"".join(recorded)
        self.assertGreater(len(wire), 42)
        factory, port = await self.listen()
        replies = []
        for _ in range(2):
            p = Probe(wire)
            await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
                protocol.Factory.forProtocol(lambda p=p: p))
            for _ in range(50):  # up to 5 s for the echo of the served request
                await sleep(0.1)
                if p.received or factory.refused:
                    break
            p.transport.loseConnection()
            await p.ended
            replies.append(p.received)
        self.assertNotEqual(replies[0], b"")  # the original is served (the echo came back)
        self.assertEqual(replies[1], b"")  # the replay gets nothing
        self.assertEqual(factory.accepted[(True, 3, 1)], 1)
        self.assertEqual(factory.refused, 1)

    def test_recorded_v2ray_request_replayed_is_refused(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._replay())

    # -- clock skew with the real V2Ray client ----------------------------------------------
    async def _skew(self, skew: int, ok: bool) -> None:
        echo_port = await self.echo_target()
        factory, port = await self.listen(now=lambda: time.time() - skew)
        socks_port = free_port()
        v2 = _v2ray_client(socks_port, port, self.account.uuid_text)
        self.addCleanup(v2.stop)
        d = defer.ensureDeferred(socks_echo(reactor, socks_port, "127.0.0.1", echo_port,
                                            10_000, timeout=30 if ok else 1.5))
        if ok:
            sent, got, _ = await d
            self.assertEqual(sent, got)
            self.assertEqual(factory.refused, 0)
        else:
            try:
                await d
            except (RuntimeError, defer.TimeoutError, defer.CancelledError):
                pass
            else:
                self.fail(f"a client {skew:+d} s off was served")
            self.assertEqual(factory.refused, 1)

    def test_v2ray_client_119s_ahead_accepted(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._skew(119, True))

    def test_v2ray_client_119s_behind_accepted(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._skew(-119, True))

    def test_v2ray_client_125s_ahead_refused(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._skew(125, False))

    def test_v2ray_client_125s_behind_refused(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._skew(-125, False))

    # -- 1,000 users -----------------------------------------------------------------------
    async def _many_users(self) -> None:
        # 1,000 users; the last one has alterId 4 (legacy). Every main ID is also valid for
        # legacy auth (as in 4.34), so the legacy table covers 1,004 IDs x 241 s.
        accounts = [Account(uuid.uuid4().bytes, alter_id=4 if i == 999 else 0, email=f"u{i}")
                    for i in range(1000)]
        echo_port = await self.echo_target()
        factory, port = await self.listen(accounts)
        for idx, alter in ((999, 4), (998, 0)):
            socks_port = free_port()
            v2 = _v2ray_client(socks_port, port, accounts[idx].uuid_text, alter)
            self.addCleanup(v2.stop)
            sent, got, _ = await socks_echo(reactor, socks_port, "127.0.0.1", echo_port,
                                            100_000)
            self.assertEqual(sent, got)
        self.assertEqual(factory.accepted[(False, 3, 1)], 1)
        self.assertEqual(factory.accepted[(True, 3, 1)], 1)

    def test_thousand_users_v2ray_clients(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._many_users())


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class IdleMemory(TestCase):
    """Resident memory per idle VMess connection in a separate vtwist server process."""

    timeout = 90

    def test_idle_connection_rss(self) -> None:
        n = 400
        user = uuid.uuid4()
        echo = EchoServer()
        self.addCleanup(echo.stop)
        port = free_port()
        config = {"log": {"loglevel": "error"},
                  "inbounds": [{"port": port, "listen": "127.0.0.1", "protocol": "vmess",
                                "settings": {"clients": [{"id": str(user)}]}}],
                  "outbounds": [{"protocol": "freedom"}]}
        tmp = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)  # noqa: SIM115
        json.dump(config, tmp)
        tmp.close()
        self.addCleanup(os.unlink, tmp.name)
        proc = Subprocess([sys.executable, "-m", "vtwist", "run", "-c", tmp.name],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(proc.stop)
        wait_for_port(port, timeout=10, alive=proc.check_alive)
        account = Account(user.bytes)
        time.sleep(0.3)
        base = _rss_kib(proc.proc.pid)
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            cs = ClientSession(account, Destination.tcp("127.0.0.1", echo.port))
            s.sendall(cs.request_header(time.time()) + b"".join(cs.body_encoder().encode(b"ping")))
            socks.append(s)
        for s in socks:  # every connection relayed: the echo came back
            s.settimeout(10)
            self.assertGreater(len(s.recv(4096)), 0)
        time.sleep(0.3)
        per = (_rss_kib(proc.proc.pid) - base) / n
        print(f"\nidle relayed VMess connection: {per:.1f} KiB RSS in the server process "
              f"(VMess side + freedom side), {n} connections")
        for s in socks:
            s.close()
        self.assertLess(per, 64)
