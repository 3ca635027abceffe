"""A flood of random datagrams at an mKCP port, for every header type with and without a
seed: no session is created, nothing is sent back, and the CPU cost per datagram is
reported."""

from __future__ import annotations

import os
import random
import socket
import time

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.netutil import wait_until
from tests.test_vmess_server import NOW, POLICY
from vtwist.proxy.guard import ProbeGuard
from vtwist.proxy.vmess.server import VMessServerFactory, VMessServerState
from vtwist.proxy.vmess.users import Account
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.obfs import HEADER_TYPES
from vtwist.transport.kcp.protocol import KCPListener, make_packer
from vtwist.transport.kcp.segment import encode_data

DATAGRAMS = 1500  # per header type and seed


class Built(Factory):
    """Counts the protocols an mKCP session would get."""

    def __init__(self) -> None:
        self.built = 0

    def buildProtocol(self, addr: object) -> Protocol:
        self.built += 1
        return Protocol()


class KCPFloodTests(TestCase):
    """Random bytes never make an mKCP session."""

    timeout = 120

    async def flood(self, sender: socket.socket, header: str, seed: str | None,
                    rng: random.Random) -> str:
        """Flood one listener; its CPU cost per datagram."""
        factory = Built()
        listener = KCPListener(KCPConfig(header_type=header, seed=seed), factory, reactor)
        port = reactor.listenUDP(0, listener, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = ("127.0.0.1", port.getHost().port)
        datagrams = [os.urandom(rng.randint(1, 1400)) for _ in range(DATAGRAMS)]
        cpu = time.process_time()
        sent = 0
        for datagram in datagrams:
            while True:
                try:
                    sender.sendto(datagram, address)
                    break
                except BlockingIOError:  # let the reactor drain the socket first
                    await deferLater(reactor, 0.001, lambda: None)
            sent += 1
            if sent % 50 == 0:
                await deferLater(reactor, 0, lambda: None)
        await wait_until(lambda: listener.stats.datagrams_in >= sent * 0.9,
                         lambda: f"{listener.stats.datagrams_in} of {sent} received",
                         timeout=30)
        used = time.process_time() - cpu  # sender and receiver: one process
        self.assertEqual(listener.stats.sessions_created, 0, (header, seed))
        self.assertEqual(factory.built, 0)
        self.assertEqual(listener.sessions, {})
        self.assertEqual(listener.stats.datagrams_out, 0)
        return (f"{header}/{'seed' if seed else 'no seed'}: "
                f"{used / listener.stats.datagrams_in * 1e6:.0f} us")

    async def test_random_datagrams_make_no_session(self) -> None:
        rng = random.Random(20)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setblocking(False)
        self.addCleanup(sender.close)
        report = [await self.flood(sender, header, seed, rng)
                  for header in HEADER_TYPES for seed in (None, "flood-seed")]
        print("\nmKCP random-datagram flood, CPU per datagram (send + receive): "
              + ", ".join(report))


class CraftedKCPFloodTests(SynchronousTestCase):
    """Without a seed anyone can craft valid mKCP datagrams: each new conversation is a
    session whose VMess server sits in its handshake. The inbound's handshake cap sheds the
    oldest at once (abort, not a lingering close), so sessions stay bounded."""

    def test_sessions_bounded_by_the_handshake_cap(self) -> None:
        clock = Clock()
        clock.advance(NOW)
        state = VMessServerState([Account(os.urandom(16))], guard=ProbeGuard())
        factory = VMessServerFactory(state, RecordingTunnels(clock), POLICY, tag="in",
                                     now=clock.seconds)
        factory.handshakes.limit = 100
        listener = KCPListener(KCPConfig(), factory, clock)
        sent: list[bytes] = []
        listener.send_datagrams = lambda datagrams, peer: sent.extend(datagrams)
        packer = make_packer(KCPConfig())
        rng = random.Random(3)
        peak = 0
        for i in range(3000):  # (port, conv) pairs repeat rarely
            segment = encode_data(conv=rng.getrandbits(16), option=0, timestamp=0, number=0,
                                  sending_next=0, payload=b"x")
            listener.datagramReceived(packer.pack(segment), ("127.0.0.1", 40000 + i % 1000))
            if i % 50 == 0:
                clock.advance(0.05)
            peak = max(peak, len(listener.sessions))
        self.assertEqual(listener.stats.sessions_created, 3000)
        self.assertLessEqual(peak, 101)
        self.assertEqual(factory.handshakes.shed, 2900)
        clock.advance(POLICY.level(0).handshake + 10)
        for _ in range(200):
            clock.advance(0.1)
        self.assertEqual(len(listener.sessions), 0)
