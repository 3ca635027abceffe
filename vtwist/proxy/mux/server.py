"""The Mux.Cool server: the body of a VMess (or VLESS) command-3 request.

The inbound hands the decoded body to a :class:`MuxServer` the way it hands a TCP request's
body to a tunnel (``receivedSequence``, ``eof``, ``lost``, ``close``). Each New frame opens
its destination through the tunnel service, as an independent inbound connection (routing,
sniffing, the access line, every outbound): a TCP session is a
:class:`~vtwist.tunnel.stream.StreamTunnel` whose inbound transport is the session's
:class:`~vtwist.proxy.mux.connection.MuxStream`, a UDP session a packet tunnel.

As V2Ray 4.34 (mux.md §3.2, §5): every New is accepted and a failure shows later as End with
Error; End from the client half-closes the target (End with Error aborts it); a target's
EOF is End, its failure End with Error; Keep for an id no longer known is answered with End
and never ends the connection; the connection ends with the client's, and its sessions
with it. Malformed frames end the connection with one log line.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IInboundReply
from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.proxy.mux.connection import MuxConnection, MuxStream
from vtwist.proxy.mux.frame import Frame
from vtwist.tunnel.activity import ActivityTimer
from vtwist.tunnel.service import TunnelService

__all__ = ["MuxServer"]


@implementer(IHalfCloseableProtocol, IInboundReply)
class _TunnelSide:
    """A TCP session's events into its StreamTunnel, and the tunnel's reply: nothing on
    success, End with Error for a failed connect."""

    __slots__ = ("stream", "tunnel")
    wantsBound = False  # succeeded() ignores the outbound's address

    def __init__(self, stream: MuxStream) -> None:
        self.stream = stream
        self.tunnel: Any = None

    def succeeded(self, bound: Any) -> None:
        """Nothing to send."""

    def failed(self, kind: Any, reason: Failure) -> None:
        """End with Error."""
        self.stream.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.received(data)

    def readConnectionLost(self) -> None:
        self.tunnel.eof()

    def writeConnectionLost(self) -> None:
        """Our End went out; the client may still send."""

    def connectionLost(self, reason: Failure) -> None:
        self.tunnel.lost(reason)


class _PacketSide:
    """A UDP session: each frame's datagram through a packet tunnel, replies back one per
    frame (with their source when the client is Xray)."""

    def __init__(self, stream: MuxStream, tunnels: TunnelService, policy: LevelPolicy,
                 **access: Any) -> None:
        self.stream = stream
        self.tunnel = tunnels.openPackets(stream.target, self._reply, self._ended,
                                          idle_timeout=policy.conn_idle, policy=policy,
                                          **access)

    def datagramReceived(self, data: bytes, destination: Destination) -> None:
        self.tunnel.send(data, destination)

    def dataReceived(self, data: bytes) -> None:
        self.tunnel.send(data, self.stream.target)

    def readConnectionLost(self) -> None:
        self.stream.loseConnection()

    def _reply(self, data: bytes, source: Destination) -> None:
        self.stream.writeTo(data, source)

    def _ended(self) -> None:
        self.stream.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.tunnel.close()


class MuxServer(MuxConnection):
    """The server side of one mux carrier; ``onDone()`` closes the carrier's connection."""

    role = "mux server"
    relay = None  # the inbound asks its body side for a relay to flush; there is none

    def __init__(self, tunnels: TunnelService, transport: Any, *, inbound_tag: str = "",
                 source: str = "", email: str | None = None,
                 policy: LevelPolicy = DEFAULT_LEVEL, sniff: tuple[str, ...] = ()) -> None:
        super().__init__(tunnels.clock, transport)
        self.tunnels = tunnels
        self.access = {"inbound_tag": inbound_tag, "source": source, "email": email}
        self.policy = policy
        self.sniff = sniff
        self.inputDone = False
        self.opened = 0
        self.activity = ActivityTimer(tunnels.clock, policy.conn_idle, self._idle)

    def frameNew(self, frame: Frame) -> None:
        """Open the session's destination through the tunnel service."""
        if self.inputDone:
            return
        target: Destination = frame.target  # type: ignore[assignment]
        sid = frame.session_id
        stream = MuxStream(self, sid, target)
        sessions = self.sessions
        if stream.udp or sid in sessions.live or sessions.udp:
            old = sessions.add(sid, stream, udp=stream.udp)
            if old is not None:  # 4.34 replaces a live id silently
                old.sentEnd = True
                old._finish(Failure(ConnectionResetByPeerId()))
        else:  # SessionTable.add, inline: a new TCP id
            sessions.live[sid] = stream
            if sid > sessions.highest:
                sessions.highest = sid
        self.opened += 1
        self.activity.active = True
        if stream.udp:
            stream.xudp = frame.global_id is not None
            try:
                side: Any = _PacketSide(stream, self.tunnels, self.policy, **self.access)
            except Exception:  # noqa: BLE001 - no outbound: End with Error
                stream.abortConnection()
                return
            stream.protocol = side
            if frame.data:
                side.datagramReceived(frame.data, target)
            return
        tcp = _TunnelSide(stream)
        stream.protocol = tcp
        tcp.tunnel = self.tunnels.openStream(
            stream, target, tcp, early=[frame.data] if frame.data else None,
            policy=self.policy, sniff=self.sniff, **self.access)

    # -- the inbound's body events --------------------------------------------------------
    def receivedSequence(self, payloads: list[Any]) -> None:
        """Decoded body pieces from the VMess connection (parsed as one)."""
        self.activity.active = True
        super().receivedSequence(payloads)

    def received(self, data: Any) -> None:
        """One decoded body piece."""
        self.activity.active = True
        self.dataReceived(data)

    def eof(self) -> None:
        """The client ended the carrier's uplink: every session's uplink ends with it."""
        if self.inputDone:
            return
        self.inputDone = True
        if not self.endOfInput():
            return
        for stream in self.sessions:
            stream._end(False)
        self._maybeDone()

    def forget(self, stream: MuxStream) -> None:
        """A session ended; after the client's EOF the last one closes the carrier."""
        super().forget(stream)
        if self.inputDone and not self.sessions.live and not self.closed:  # _maybeDone
            self.close()

    def _maybeDone(self) -> None:
        if self.inputDone and not self.closed and not len(self.sessions):
            self.close()

    def lost(self, reason: Failure | None = None) -> None:
        """The VMess connection is gone: every session ends."""
        self.activity.cancel()
        super().lost(reason)

    def close(self) -> None:
        """Close the carrier (flushing what is framed) and every session."""
        if self.closed:
            return
        self.flush()
        self.lost(None)
        if self.transport is not None:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def _idle(self) -> None:
        self.close()


class ConnectionResetByPeerId(Exception):
    """A New frame reused the id of a live session, which it replaces."""
