"""The bridge of V2Ray's reverse proxy (4.34 app/reverse/bridge.go).

The bridge sits behind NAT beside the services it exposes. Every 2 s it checks its
connections to the portal: when none is active, or they average more than 16 sessions, it
opens one more. A connection is a stream to ``domain:0`` routed like any inbound connection
with the bridge's tag as inbound tag (so a routing rule sends it to the outbound that
reaches the portal, e.g. VMess). On it the bridge is a Mux.Cool *server*: the portal opens
sessions; each is routed with the bridge's tag as inbound tag (a rule sends them to the
local service, e.g. freedom with a redirect). The session to ``reverse.internal.v2ray.com``
is the control session: its datagrams are :mod:`~vtwist.app.reverse.control` messages; on
DRAIN the connection stops counting as active (it serves its sessions to the end), and the
next check opens a fresh one.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.app.reverse.control import ACTIVE, INTERNAL_DOMAIN, ControlError, decode_control
from vtwist.app.reverse.pipe import connect_pair
from vtwist.interfaces import IInboundReply
from vtwist.proxy.mux.connection import MuxStream
from vtwist.proxy.mux.frame import Frame
from vtwist.proxy.mux.server import MuxServer
from vtwist.tunnel.service import TunnelService

__all__ = ["Bridge", "BridgeWorker"]

log = Logger(namespace="vtwist.reverse")

#: How often the bridge checks its connections (4.34: 2 s).
CHECK_INTERVAL = 2.0
#: Average sessions per connection above which the bridge opens another (4.34: 16).
SESSIONS_PER_CONNECTION = 16


class _Control:
    """The control session's receiver: each datagram a Control message."""

    def __init__(self, worker: BridgeWorker) -> None:
        self.worker = worker

    def datagramReceived(self, data: bytes, source: Any) -> None:
        try:
            state = decode_control(data)
        except ControlError as e:
            log.info("reverse bridge {tag}: bad control message: {why}",
                     tag=self.worker.bridge.tag, why=e)
            return
        if state != self.worker.state:
            self.worker.state = state
            log.info("reverse bridge {tag}: the portal asks to {what} a connection",
                     tag=self.worker.bridge.tag, what="drain" if state else "use")

    def dataReceived(self, data: bytes) -> None:
        self.datagramReceived(data, None)

    def connectionLost(self, reason: Failure) -> None:
        """The portal closed the control session."""


class _BridgeMux(MuxServer):
    """The Mux.Cool server on one bridge connection; the control session stays inside."""

    role = "reverse bridge"

    def __init__(self, worker: BridgeWorker) -> None:
        super().__init__(worker.bridge.tunnels, None, inbound_tag=worker.bridge.tag,
                         source=f"reverse:{worker.bridge.domain}")
        self.worker = worker

    def frameNew(self, frame: Frame) -> None:
        """The control session, else a session routed with the bridge's tag."""
        target = frame.target
        if target is None or target.host != INTERNAL_DOMAIN:
            super().frameNew(frame)
            return
        stream = MuxStream(self, frame.session_id, target)
        self.sessions.add(frame.session_id, stream, udp=stream.udp)
        stream.protocol = _Control(self.worker)
        if frame.data:
            stream.protocol.datagramReceived(frame.data, None)


@implementer(IHalfCloseableProtocol)
class _MuxSide(Protocol):
    """The pipe end the mux server reads and writes."""

    def __init__(self, server: _BridgeMux) -> None:
        self.server = server

    def connectionMade(self) -> None:
        self.server.attach(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.server.received(data)

    def readConnectionLost(self) -> None:
        self.server.eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.server.lost(reason)


@implementer(IHalfCloseableProtocol)
class _TunnelSide(Protocol):
    """The pipe end the tunnel to the portal relays (the tunnel's inbound side)."""

    tunnel: Any = None

    def __init__(self) -> None:
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.received(data)

    def readConnectionLost(self) -> None:
        self.tunnel.eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.tunnel is not None:
            self.tunnel.lost(reason)
        self.done.callback(None)


@implementer(IInboundReply)
class _Reply:
    wantsBound = False  # succeeded() ignores the outbound's address

    def __init__(self, worker: BridgeWorker) -> None:
        self.worker = worker

    def succeeded(self, bound: Any) -> None:
        self.worker.connected = True
        log.info("reverse bridge {tag}: connected to the portal", tag=self.worker.bridge.tag)

    def failed(self, kind: Any, reason: Failure) -> None:
        log.warn("reverse bridge {tag}: cannot reach the portal: {why}",
                 tag=self.worker.bridge.tag, why=reason.getErrorMessage())


class BridgeWorker:
    """One connection to the portal and the mux server on it."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.state = ACTIVE
        self.connected = False
        self.server = _BridgeMux(self)
        side = self.side = _TunnelSide()
        self.ends = connect_pair(bridge.tunnels.clock, side, _MuxSide(self.server))
        side.tunnel = bridge.tunnels.openStream(
            self.ends[0], Destination.tcp(bridge.domain, 0), _Reply(self),
            inbound_tag=bridge.tag, source=f"reverse:{bridge.domain}")

    @property
    def active(self) -> bool:
        """Counted: not drained and still open (4.34 ``IsActive``)."""
        return self.state == ACTIVE and not self.server.closed

    def connections(self) -> int:
        """Live sessions (the control session included, as 4.34 counts)."""
        return len(self.server.sessions)

    def close(self) -> Deferred[None]:
        """Close the connection and its sessions; fires once the tunnel has its end."""
        self.server.close()
        self.ends[0].loseConnection()
        return self.side.done


class Bridge(Service):
    """Keeps connections to the portal open (see the module docstring)."""

    def __init__(self, tunnels: TunnelService, tag: str, domain: str,
                 interval: float = CHECK_INTERVAL) -> None:
        self.tunnels = tunnels
        self.tag = tag
        self.domain = domain
        self.interval = interval
        self.workers: list[BridgeWorker] = []
        #: every connection still open, drained ones included
        self.all: list[BridgeWorker] = []
        self._timer: Any = None
        #: connections opened so far
        self.opened = 0

    def startService(self) -> None:
        """Open the first connection and check every ``interval``."""
        super().startService()
        self.check()

    def check(self) -> None:
        """Drop what is no longer active; open a connection when none is, or when they
        average more than 16 sessions."""
        self._timer = None
        self.workers = [w for w in self.workers if w.active]
        sessions = sum(w.connections() for w in self.workers)
        if not self.workers or sessions / len(self.workers) > SESSIONS_PER_CONNECTION:
            try:
                worker = BridgeWorker(self)
            except Exception as e:  # noqa: BLE001 - no outbound: try again later
                log.warn("reverse bridge {tag}: cannot open a connection: {why}",
                         tag=self.tag, why=e)
            else:
                self.workers.append(worker)
                self.all.append(worker)
                self.opened += 1
        self.all = [w for w in self.all if not w.server.closed]
        if self.running:
            self._timer = self.tunnels.clock.callLater(self.interval, self.check)

    def stopService(self) -> Deferred[Any]:
        """Stop checking and close every connection (fires once they are closed)."""
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        workers, self.workers = self.all, []
        self.all = []
        return DeferredList([w.close() for w in workers], consumeErrors=True)
