"""Raw mKCP interop with V2Ray 4.34 (no VMess): byte streams over dokodemo-door + freedom.

* vtwist client -> V2Ray mKCP listener (dokodemo-door) -> TCP echo
* TCP client -> V2Ray dokodemo-door -> freedom dialing mKCP -> vtwist mKCP listener (echo)
"""

from __future__ import annotations

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from tests.interop.kcp_support import (
    kcp_inbound_to_tcp,
    kcp_settings,
    tcp_inbound_to_kcp,
)
from tests.interop.transport_support import TransportTestCase
from tests.netutil import free_port
from vtwist.testing.doubles import Collector, Echo
from vtwist.testing.udprelay import Impairment, UDPImpairmentRelay
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.endpoints import KCPClientEndpoint, KCPServerEndpoint
from vtwist.transport.kcp.session import State

#: Short TERMINATE linger for test clients (V2Ray's 8 s would only slow the tests down).
LINGER = 0.3


class KCPRawInteropTests(TransportTestCase):
    timeout = 60

    async def _v2ray_listener(self, header: str, seed: str | None) -> int:
        echo = await self.echo_server()
        kport = free_port(udp_too=True)
        proc = self.v2ray(kcp_inbound_to_tcp(kport, echo, kcp_settings(header, seed)))
        await proc.wait_started()
        return kport

    async def _to_v2ray(self, header: str, seed: str | None, size: int) -> None:
        kport = await self._v2ray_listener(header, seed)
        cfg = KCPConfig(header_type=header, seed=seed)
        ep = KCPClientEndpoint(reactor, "127.0.0.1", kport, cfg, linger=LINGER)
        client = await self.transfer(ep, size)
        self.assertEqual(client.reason.type.__name__, "ConnectionDone")
        await client.transport.terminated
        self.assertEqual(client.transport.session.state, State.TERMINATED)

    def test_vtwist_client_dtls_simple(self) -> defer.Deferred:
        return defer.ensureDeferred(self._to_v2ray("dtls", None, 2_000_000))

    def test_vtwist_client_dtls_seed(self) -> defer.Deferred:
        return defer.ensureDeferred(self._to_v2ray("dtls", "vtwist-seed", 2_000_000))

    def test_vtwist_client_empty_seed(self) -> defer.Deferred:
        return defer.ensureDeferred(self._to_v2ray("wechat-video", "", 500_000))

    def test_vtwist_client_other_headers(self) -> defer.Deferred:
        async def run() -> None:
            for header in ("none", "srtp", "utp", "wireguard"):
                await self._to_v2ray(header, None, 300_000)
        return defer.ensureDeferred(run())

    def test_mismatched_seed_gets_nothing(self) -> defer.Deferred:
        async def run() -> None:
            kport = await self._v2ray_listener("dtls", "right")
            cfg = KCPConfig(header_type="dtls", seed="wrong")
            c = Collector()
            await KCPClientEndpoint(reactor, "127.0.0.1", kport, cfg, linger=LINGER).connect(
                protocol.Factory.forProtocol(lambda: c))
            c.transport.write(b"x" * 100)
            await task.deferLater(reactor, 0.5, lambda: None)
            self.assertEqual(bytes(c.buf), b"")
            self.assertGreater(c.transport.owner.stats.datagrams_out, 0)
            self.assertEqual(c.transport.owner.stats.datagrams_in, 0)
            c.transport.abortConnection()
            await c.transport.terminated
        return defer.ensureDeferred(run())

    def test_echo_latency_against_v2ray(self) -> defer.Deferred:
        async def run() -> None:
            kport = await self._v2ray_listener("dtls", None)
            c = Collector()
            await KCPClientEndpoint(reactor, "127.0.0.1", kport, KCPConfig(
                header_type="dtls"), linger=LINGER).connect(protocol.Factory.forProtocol(lambda: c))
            times = await c.echo_times(20)
            # V2Ray's own side still waits for its tti tick: ~ one tti (50 ms) per echo.
            self.assertLess(times[10], 0.2)
            c.transport.loseConnection()
            await c.lost
            await c.transport.terminated
        return defer.ensureDeferred(run())

    async def _from_v2ray(self, header: str, seed: str | None, size: int) -> None:
        kport = free_port(udp_too=True)
        cfg = KCPConfig(header_type=header, seed=seed)
        port = await self.listen(KCPServerEndpoint(reactor, kport, "127.0.0.1", cfg),
                                 protocol.Factory.forProtocol(Echo))
        tport = free_port(udp_too=True)
        proc = self.v2ray(tcp_inbound_to_kcp(tport, kport, kcp_settings(header, seed)))
        await proc.wait_port(tport)
        await self.transfer(TCP4ClientEndpoint(reactor, "127.0.0.1", tport), size)
        listener = port.listener
        self.assertEqual(listener.packer.auth_failures, 0)
        # V2Ray closes its side: our session must end and leave no zombie.
        for _ in range(300):
            if not listener.sessions:
                break
            await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(listener.sessions, {})
        self.assertEqual(listener.stats.sessions_created, 1)

    def test_v2ray_client_dtls_simple(self) -> defer.Deferred:
        return defer.ensureDeferred(self._from_v2ray("dtls", None, 2_000_000))

    def test_v2ray_client_dtls_seed(self) -> defer.Deferred:
        return defer.ensureDeferred(self._from_v2ray("dtls", "vtwist-seed", 2_000_000))

    def test_v2ray_client_srtp(self) -> defer.Deferred:
        return defer.ensureDeferred(self._from_v2ray("srtp", None, 300_000))



class KCPLossyInteropTests(TransportTestCase):
    """10 MB each way through 10% loss with reordering and duplication, against V2Ray."""

    timeout = 120

    IMPAIR = dict(loss=0.10, delay=0.002, jitter=0.002, reorder=0.05, reorder_gap=0.004,
                  duplicate=0.05)

    async def _relay(self, target_port: int) -> tuple[UDPImpairmentRelay, int]:
        imp = Impairment(**self.IMPAIR)
        relay = UDPImpairmentRelay(reactor, ("127.0.0.1", target_port), imp, imp, seed=11)
        port = relay.start()
        self.addCleanup(relay.stop)
        return relay, port

    def _check_relay(self, relay: UDPImpairmentRelay) -> None:
        for d in relay.stats.values():
            self.assertGreater(d.dropped, 0)
            self.assertGreater(d.duplicated, 0)
            self.assertGreater(d.reordered, 0)

    def test_vtwist_client_to_v2ray_lossy(self) -> defer.Deferred:
        async def run() -> None:
            echo = await self.echo_server()
            kport = free_port(udp_too=True)
            proc = self.v2ray(kcp_inbound_to_tcp(kport, echo, kcp_settings("dtls")))
            await proc.wait_started()
            relay, rport = await self._relay(kport)
            ep = KCPClientEndpoint(reactor, "127.0.0.1", rport, KCPConfig(header_type="dtls"),
                                   linger=LINGER)
            client = await self.transfer(ep, 10_000_000)
            await client.transport.terminated
            self._check_relay(relay)
        return defer.ensureDeferred(run())

    def test_v2ray_client_to_vtwist_lossy(self) -> defer.Deferred:
        async def run() -> None:
            kport = free_port(udp_too=True)
            port = await self.listen(
                KCPServerEndpoint(reactor, kport, "127.0.0.1", KCPConfig(header_type="dtls")),
                protocol.Factory.forProtocol(Echo))
            relay, rport = await self._relay(kport)
            tport = free_port(udp_too=True)
            proc = self.v2ray(tcp_inbound_to_kcp(tport, rport, kcp_settings("dtls")))
            await proc.wait_port(tport)
            await self.transfer(TCP4ClientEndpoint(reactor, "127.0.0.1", tport), 10_000_000)
            self._check_relay(relay)
            self.assertEqual(port.listener.packer.auth_failures, 0)
        return defer.ensureDeferred(run())
