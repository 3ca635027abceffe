"""A userspace UDP impairment relay (this kernel has no netem).

Clients send to the relay's port; each distinct client (ip, port) gets its own upstream
socket to the target, so the target sees one stable source per client.  Each direction is
impaired independently, driven by one seeded RNG so runs repeat::

    relay = UDPImpairmentRelay(reactor, ("127.0.0.1", server_port),
                               upstream=Impairment(loss=0.1, delay=0.02, jitter=0.005,
                                                   reorder=0.05, duplicate=0.02),
                               downstream=Impairment(loss=0.1, delay=0.02), seed=1)
    relay_port = relay.start()
    ...
    await relay.stop()

Bytes are never changed (set ``corrupt`` to flip one byte of some datagrams, to test that
receivers drop them).  Delays are scheduled with the reactor's ``callLater`` (a
``task.Clock`` works for in-memory tests).  Per-direction counters let tests assert that
impairment really happened.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol

from vtwist.transport.kcp.protocol import tune_socket

BUFFER_BYTES = 16 * 1024 * 1024


@dataclass
class Impairment:
    """Impairments of one direction.  Times are seconds, probabilities 0..1."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    reorder: float = 0.0
    reorder_gap: float = 0.01
    duplicate: float = 0.0
    duplicate_delay: float = 0.0
    corrupt: float = 0.0
    #: Gilbert-Elliott bursts: chance to enter / leave the bad state per datagram, and the
    #: loss probability while bad (``loss`` applies in the good state).
    burst_enter: float = 0.0
    burst_leave: float = 0.3
    burst_loss: float = 1.0
    #: Token-bucket rate limit in bytes per second (None: unlimited); excess is dropped.
    rate: float | None = None
    bucket: int = 256 * 1024


@dataclass
class DirectionStats:
    """Counters of one direction."""

    received: int = 0
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    rate_dropped: int = 0
    bytes_sent: int = 0
    send_errors: int = 0


@dataclass
class _Direction:
    imp: Impairment
    stats: DirectionStats = field(default_factory=DirectionStats)
    bad: bool = False
    tokens: float = 0.0
    last_fill: float = 0.0


def enlarge_buffers(port: Any, size: int = BUFFER_BYTES) -> None:
    """Big kernel buffers on a Twisted UDP port (forced past rmem_max when root)."""
    tune_socket(port, size)


class _ClientSide(DatagramProtocol):
    def __init__(self, relay: UDPImpairmentRelay) -> None:
        self.relay = relay

    def startProtocol(self) -> None:
        enlarge_buffers(self.transport)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.relay._from_client(data, (addr[0], addr[1]))


class _Upstream(DatagramProtocol):
    def __init__(self, relay: UDPImpairmentRelay, client: tuple[str, int]) -> None:
        self.relay = relay
        self.client = client

    def startProtocol(self) -> None:
        enlarge_buffers(self.transport)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.relay._from_server(data, self.client)

    def connectionRefused(self) -> None:
        """The target is not there (yet); datagrams are simply lost."""


class UDPImpairmentRelay:
    """Forward UDP between clients and one target with seeded impairments."""

    def __init__(self, reactor: Any, target: tuple[str, int],
                 upstream: Impairment | None = None, downstream: Impairment | None = None,
                 seed: int = 0, listen_host: str = "127.0.0.1", listen_port: int = 0) -> None:
        self.reactor = reactor
        self.target = target
        self.rng = random.Random(seed)
        self.c2s = _Direction(upstream or Impairment())
        self.s2c = _Direction(downstream or Impairment())
        self.listen_host = listen_host
        self.listen_port = listen_port
        self._port: Any = None
        self._upstreams: dict[tuple[str, int], Any] = {}
        self._pending: set[Any] = set()

    @property
    def stats(self) -> dict[str, DirectionStats]:
        """Counters by direction: ``c2s`` (client to server) and ``s2c``."""
        return {"c2s": self.c2s.stats, "s2c": self.s2c.stats}

    def start(self) -> int:
        """Listen; returns the relay's UDP port."""
        self._port = self.reactor.listenUDP(self.listen_port, _ClientSide(self),
                                            interface=self.listen_host, maxPacketSize=65536)
        return self._port.getHost().port

    def stop(self) -> defer.Deferred:
        """Cancel pending sends and close every socket."""
        for call in list(self._pending):
            if call.active():
                call.cancel()
        self._pending.clear()
        ds = []
        for up in self._upstreams.values():
            d = up.stopListening()
            if d is not None:
                ds.append(d)
        self._upstreams.clear()
        if self._port is not None:
            d = self._port.stopListening()
            self._port = None
            if d is not None:
                ds.append(d)
        return defer.DeferredList(ds)

    # ------------------------------------------------------------------ paths
    def _from_client(self, data: bytes, client: tuple[str, int]) -> None:
        up = self._upstreams.get(client)
        if up is None:
            family_v6 = ":" in self.target[0]
            up = self.reactor.listenUDP(0, _Upstream(self, client),
                                        interface="::1" if family_v6 else "127.0.0.1",
                                        maxPacketSize=65536)
            up.connect(self.target[0], self.target[1])
            self._upstreams[client] = up
        self._impair(self.c2s, data, up, None)

    def _from_server(self, data: bytes, client: tuple[str, int]) -> None:
        if self._port is None:
            return
        self._impair(self.s2c, data, self._port, client)

    def _impair(self, d: _Direction, data: bytes, port: Any, addr: Any) -> None:
        imp = d.imp
        st = d.stats
        rng = self.rng
        st.received += 1
        if imp.rate is not None:
            now = self.reactor.seconds()
            d.tokens = min(imp.bucket, d.tokens + (now - d.last_fill) * imp.rate)
            d.last_fill = now
            if d.tokens < len(data):
                st.rate_dropped += 1
                st.dropped += 1
                return
            d.tokens -= len(data)
        if imp.burst_enter > 0.0:
            if d.bad:
                if rng.random() < imp.burst_leave:
                    d.bad = False
            elif rng.random() < imp.burst_enter:
                d.bad = True
        loss = imp.burst_loss if d.bad else imp.loss
        if loss > 0.0 and rng.random() < loss:
            st.dropped += 1
            return
        if imp.corrupt > 0.0 and rng.random() < imp.corrupt and data:
            st.corrupted += 1
            i = rng.randrange(len(data))
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        delay = imp.delay
        if imp.jitter > 0.0:
            delay += rng.random() * imp.jitter
        if imp.reorder > 0.0 and rng.random() < imp.reorder:
            delay += imp.reorder_gap
            st.reordered += 1
        self._schedule(delay, port, data, addr, st)
        if imp.duplicate > 0.0 and rng.random() < imp.duplicate:
            st.duplicated += 1
            self._schedule(delay + imp.duplicate_delay, port, data, addr, st)

    def _schedule(self, delay: float, port: Any, data: bytes, addr: Any,
                  st: DirectionStats) -> None:
        if delay <= 0.0:
            self._send(port, data, addr, st, None)
            return
        holder: list[Any] = []
        call = self.reactor.callLater(delay, self._send, port, data, addr, st, holder)
        holder.append(call)
        self._pending.add(call)

    def _send(self, port: Any, data: bytes, addr: Any, st: DirectionStats,
              holder: list[Any] | None) -> None:
        if holder:
            self._pending.discard(holder[0])
        sock = getattr(port, "socket", None)
        try:
            if sock is None:
                port.write(data, addr)
            elif addr is None:
                sock.send(data)
            else:
                sock.sendto(data, addr)
            st.sent += 1
            st.bytes_sent += len(data)
        except OSError:
            st.send_errors += 1
