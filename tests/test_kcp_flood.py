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
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.netutil import wait_until
from vtwist.transport.kcp.config import KCPConfig
from vtwist.transport.kcp.obfs import HEADER_TYPES
from vtwist.transport.kcp.protocol import KCPListener

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
