"""The portal of V2Ray's reverse proxy (4.34 app/reverse/portal.go): an outbound.

Routing sends two kinds of traffic to the portal's tag:

- the bridge's connections, which arrive on some inbound (e.g. VMess) as a stream to the
  portal's ``domain``. The portal becomes a Mux.Cool *client* on each (a
  :class:`~vtwist.proxy.mux.client.MuxCarrier` joined to the tunnel through an in-memory
  pipe) and opens the control session on it, a UDP session to
  ``reverse.internal.v2ray.com:0`` that carries a Control message every 2 s; once a
  connection has had more than 256 sessions the portal sends DRAIN and closes the control
  session (the bridge then opens a fresh connection; this one closes when its sessions
  are done);
- everything else: a session on the least busy connection that is not draining (else any
  open one). With no bridge connected the connection fails at once.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.app.reverse.control import ACTIVE, DRAIN, INTERNAL_DOMAIN, encode_control
from vtwist.app.reverse.pipe import connect_pair
from vtwist.interfaces import IOutbound
from vtwist.proxy.datagram_connections import ConnectionPerDestination
from vtwist.proxy.mux.client import MuxCarrier, MuxCarrierProtocol, MuxPool
from vtwist.proxy.mux.frame import encode_address

__all__ = ["PortalOutbound", "PortalWorker"]

log = Logger(namespace="vtwist.reverse")

#: How often the portal sends a Control message (4.34: 2 s).
HEARTBEAT_INTERVAL = 2.0
#: Sessions in a connection's life after which the portal drains it (4.34: 256).
DRAIN_AFTER = 256


class _ControlSender(Protocol):
    """The control session: a Control message now and every interval."""

    def __init__(self, worker: PortalWorker) -> None:
        self.worker = worker

    def connectionMade(self) -> None:
        self.worker.control = self
        self.worker.heartbeat()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.worker.controlLost()


class PortalWorker:
    """One bridge connection: the mux carrier on it and its control session."""

    def __init__(self, portal: PortalOutbound, carrier: MuxCarrier) -> None:
        self.portal = portal
        self.carrier = carrier
        self.draining = False
        self.control: _ControlSender | None = None
        self._timer: Any = None
        carrier.open(Destination.udp(INTERNAL_DOMAIN, 0),
                     Factory.forProtocol(lambda: _ControlSender(self)))

    @property
    def closed(self) -> bool:
        """The connection is gone."""
        return bool(self.carrier.closed)

    def load(self) -> int:
        """Live sessions on the connection."""
        return len(self.carrier.sessions)

    def heartbeat(self) -> None:
        """A Control message; DRAIN (and the control session's end) once the connection
        has carried more than 256 sessions."""
        self._timer = None
        control = self.control
        if control is None or self.closed or self.draining:
            return
        if self.carrier.opened > DRAIN_AFTER:
            self.draining = True
            control.transport.write(encode_control(DRAIN, _random()))
            control.transport.loseConnection()
            log.info("reverse portal {tag}: draining a bridge connection",
                     tag=self.portal.tag)
            return
        control.transport.write(encode_control(ACTIVE, _random()))
        self._timer = self.portal.reactor.callLater(self.portal.heartbeat_interval,
                                                    self.heartbeat)

    def controlLost(self) -> None:
        """The control session ended (drained, or the connection closed)."""
        self.control = None
        self.draining = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def close(self) -> Deferred[None]:
        """Close the connection; fires once it is closed."""
        gone = self.carrier.whenGone()
        self.carrier.close()
        return gone


def _random() -> bytes:
    return os.urandom(random.randrange(1, 64))  # never an empty datagram (dropped)


@implementer(IStreamClientEndpoint)
class _ArrivalEndpoint:
    """What the tunnel 'connects' for a bridge's connection: the portal's mux client."""

    def __init__(self, portal: PortalOutbound) -> None:
        self.portal = portal

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        proto = protocolFactory.buildProtocol(None)
        carrier = MuxCarrier(self.portal.pool)
        connect_pair(self.portal.reactor, proto, MuxCarrierProtocol(carrier))
        self.portal.added(PortalWorker(self.portal, carrier))
        return succeed(proto)


@implementer(IStreamClientEndpoint)
class _SessionEndpoint:
    """A session to ``destination`` through a bridge connection."""

    def __init__(self, portal: PortalOutbound, destination: Destination) -> None:
        self.portal = portal
        self.destination = destination

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        try:
            encode_address(self.destination)
        except ValueError as e:
            return fail(ConnectError(f"Mux.Cool cannot carry {self.destination}: {e}"))
        worker = self.portal.pick()
        if worker is None:
            return fail(ConnectError(f"reverse portal {self.portal.tag}: no bridge is "
                                     "connected"))
        return worker.carrier.open(self.destination, protocolFactory)


@implementer(IOutbound)
class PortalOutbound:
    """The portal as an outbound tagged ``tag`` (see the module docstring)."""

    def __init__(self, reactor: Any, tag: str, domain: str,
                 heartbeat_interval: float = HEARTBEAT_INTERVAL) -> None:
        self.reactor = reactor
        self.tag = tag
        self.domain = domain.lower()
        self.heartbeat_interval = heartbeat_interval
        #: the carriers' settings: no session cap (4.34's portal has none)
        self.pool = MuxPool(self._noDial, 1024, reactor=reactor, max_sessions=1 << 30)
        self.workers: list[PortalWorker] = []

    @staticmethod
    def _noDial() -> Any:
        raise ConnectError("a reverse portal does not dial; bridges connect to it")

    def added(self, worker: PortalWorker) -> None:
        """A bridge connected."""
        self.workers = [w for w in self.workers if not w.closed]
        self.workers.append(worker)
        log.info("reverse portal {tag}: a bridge connected ({n} connection(s))",
                 tag=self.tag, n=len(self.workers))

    def pick(self) -> PortalWorker | None:
        """The open, not draining connection with the fewest sessions (else any open)."""
        self.workers = [w for w in self.workers if not w.closed]
        fresh = [w for w in self.workers if not w.draining]
        pool = fresh or self.workers
        return min(pool, key=PortalWorker.load) if pool else None

    def endpointFor(self, destination: Destination) -> Any:
        """The bridge's own connection (to ``domain``), else a session through a bridge."""
        if destination.network == "tcp" and destination.host == self.domain:
            return _ArrivalEndpoint(self)
        return _SessionEndpoint(self, destination)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> ConnectionPerDestination:
        """UDP: a mux UDP session per destination through a bridge."""
        return ConnectionPerDestination(self, onPacket, onClose, "reverse UDP")

    def close(self) -> Deferred[Any]:
        """Close every bridge connection."""
        workers, self.workers = self.workers, []
        return DeferredList([w.close() for w in workers], consumeErrors=True)
