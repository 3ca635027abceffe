"""VLESS inbound: many users on one port; after the request, a tunnel or a packet session.

The first bytes are decoded by :class:`~vtwist.proxy.vless.codec.RequestParser`. A valid TCP
request becomes a stream tunnel (:meth:`TunnelService.openStream`) whose transport puts the
response header in front of the first downlink bytes; a UDP request becomes a packet side
(one length-prefixed datagram each way). A connection that is not VLESS goes, when the
inbound has ``fallbacks``, to the fallback 4.34 would choose, with every byte read so far
(:mod:`vtwist.proxy.fallback`): a first read shorter than 18 bytes, a wrong version or an
unknown UUID. Anything else refused (and everything, without fallbacks) is never answered:
the probe guard drains it and closes it later. Mux (command 3) runs a
:class:`~vtwist.proxy.mux.server.MuxServer` on the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.fallback.choose import FIRST_READ, MIN_REQUEST, choose_in, fallback_table
from vtwist.proxy.fallback.handoff import FallbackLink, hand_off, negotiated_alpn
from vtwist.proxy.fallback.settings import Fallback
from vtwist.proxy.guard import GuardedServerProtocol, ProbeGuard, SilentReply
from vtwist.proxy.vless.codec import (
    CMD_MUX,
    CMD_TCP,
    Invalid,
    PacketDecoder,
    Request,
    RequestParser,
    encode_response,
)
from vtwist.proxy.vless.settings import VLESSAccount
from vtwist.proxy.vless.transport import VLESSTransport
from vtwist.proxy.vmess.server_udp import VMessPacketSide
from vtwist.sansio import NEED_DATA
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.service import TunnelService

__all__ = ["VLESSServerFactory", "VLESSServerProtocol"]

log = Logger(namespace="vtwist.vless.inbound")

RESPONSE = encode_response()


class Phase(Enum):
    """Where one VLESS connection is."""

    HANDSHAKE = "handshake"
    FALLBACK = "fallback"
    PROBE = "probe"
    STREAM = "stream"
    PACKETS = "packets"
    DONE = "done"


@implementer(IHalfCloseableProtocol)
class VLESSServerProtocol(GuardedServerProtocol):
    """One inbound VLESS connection."""

    protocolName = "vless"

    def __init__(self, factory: VLESSServerFactory) -> None:
        self.factory = factory
        self.phase = Phase.HANDSHAKE
        self.parser: RequestParser | None = RequestParser(factory.users.get)
        self.first: bytes | None = None
        self.inner: VLESSTransport | None = None
        self.decoder: PacketDecoder | None = None
        #: the StreamTunnel or packet side the payload goes to
        self.side: Any = None
        self.fallback: FallbackLink | None = None
        self._timer: IDelayedCall | None = None

    @property
    def reactor(self) -> Any:
        """The factory's reactor (a Clock in tests)."""
        return self.factory.reactor

    def connectionMade(self) -> None:
        """Start the handshake deadline."""
        self.startHandshakeTimer(self.factory.policy.level(0).handshake)

    def handshakeTimedOut(self) -> None:
        """No complete request in time: the fallback (as 4.34), else refused."""
        self._timer = None
        if self.phase is not Phase.HANDSHAKE:
            return
        if self.first is None and self.factory.fallbacks:
            self._fallBack(b"", "no bytes within the handshake timeout")  # as 4.34
            return
        self._refuse(f"no complete request within the handshake timeout "
                     f"({self.parser.buffered} bytes)")  # type: ignore[union-attr]

    # -- input -------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """The request, then the payload (to the tunnel, the fallback, or nowhere)."""
        phase = self.phase
        if phase is Phase.STREAM:
            self.side.received(data)
        elif phase is Phase.HANDSHAKE:
            self._handshake(data)
        elif phase is Phase.PACKETS:
            packets = self.decoder.feed(data)  # type: ignore[union-attr]
            if packets:
                self.side.receivedSequence([p for p in packets if p])
        elif phase is Phase.FALLBACK:
            self.fallback.received(data)  # type: ignore[union-attr]
        elif self.hold is not None:
            self.hold.discard(data)

    def _handshake(self, data: bytes) -> None:
        f = self.factory
        parser = self.parser
        if self.first is None:
            self.first = data[:FIRST_READ]
            if f.fallbacks and len(data) < MIN_REQUEST:
                self._fallBack(data, "first read shorter than 18 bytes")
                return
        result = parser.feed(data)  # type: ignore[union-attr]
        if result is NEED_DATA:
            return
        if isinstance(result, Invalid):
            if result.fallback and f.fallbacks:
                self._fallBack(bytes(parser.buf), result.reason)  # type: ignore[union-attr]
            else:
                self._refuse(result.reason)
            return
        self.parser = None
        self._accept(result)  # type: ignore[arg-type]

    def _accept(self, r: Request) -> None:
        self.handshakeDone()
        f = self.factory
        acct: VLESSAccount = r.account
        f.accepted[r.command] += 1
        policy = f.policy.level(acct.level)
        email = acct.email or None
        if r.command == CMD_MUX:
            from vtwist.proxy.mux.server import MuxServer
            self.inner = VLESSTransport(self.transport, RESPONSE)
            self.phase = Phase.STREAM
            self.side = MuxServer(f.tunnels, self.inner, inbound_tag=f.tag, source=self._peer(),
                                  email=email, policy=policy, sniff=f.sniffing)
            if r.leftover:
                self.side.received(r.leftover)
            return
        if r.command == CMD_TCP:
            self.inner = VLESSTransport(self.transport, RESPONSE)
            self.phase = Phase.STREAM
            self.side = f.tunnels.openStream(
                self.inner, r.destination, SilentReply(self._close), inbound_tag=f.tag,
                early=[r.leftover] if r.leftover else None, source=self._peer(),
                email=email, policy=policy, sniff=f.sniffing)
            return
        self.inner = VLESSTransport(self.transport, RESPONSE, packet=True)
        self.decoder = PacketDecoder()
        self.phase = Phase.PACKETS
        try:
            self.side = VMessPacketSide(f.tunnels, self.inner, r.destination, policy,
                                        self._close, inbound_tag=f.tag,
                                        source=self._peer(), email=email)
        except Exception as e:  # noqa: BLE001 - no outbound: close quietly
            log.info("vless UDP {dest}: {why}", dest=r.destination, why=e)
            self._close()
            return
        self.inner.flushHeader()  # a UDP client may wait for replies before it sends
        if r.leftover:
            self.dataReceived(r.leftover)

    # -- not VLESS ----------------------------------------------------------------------
    def _fallBack(self, early: bytes, why: str) -> None:
        f = self.factory
        fallback = f.choose(negotiated_alpn(self.transport), self.first or b"")
        if fallback is None:
            self._refuse(f"{why}; no fallback matches")
            return
        self._cancelTimer()
        self.parser = None
        self.phase = Phase.FALLBACK
        f.fellBack += 1
        log.info("vless from {peer}: {why}; fallback to {dest}", peer=self._peer(), why=why,
                 dest=fallback.dest.rstrip("\0"))
        self.fallback = hand_off(self.transport, fallback, early, self.reactor,
                                 f.policy.level(0), f.tunnels, f.tag)

    def _refuse(self, reason: str) -> None:
        """Never answer: one access line, then the guard holds the connection."""
        self.rejectClient(reason)
        self.parser = None
        self.phase = Phase.PROBE
        self.holdConnection(self.factory.guard)

    # -- ending ----------------------------------------------------------------------------
    def _close(self) -> None:
        if self.phase is Phase.DONE:
            return
        side = self.side
        if self.phase is Phase.STREAM and side is not None and side.relay is not None:
            side.close()  # the relay flushes both sides
            return
        self.phase = Phase.DONE
        self._cancelTimer()
        if side is not None:
            self.side = None
            side.lost(None)
        if self.inner is not None:
            self.inner.loseConnection()
        else:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client half-closed."""
        phase = self.phase
        if phase is Phase.STREAM:
            self.side.eof()
        elif phase is Phase.PACKETS:
            self.side.eof()
        elif phase is Phase.FALLBACK:
            self.fallback.eof()  # type: ignore[union-attr]
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our FIN went out (probe mode)."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Release everything this connection held."""
        self.phase = Phase.DONE
        self._cancelTimer()
        self.releaseHold()
        if self.fallback is not None:
            fallback, self.fallback = self.fallback, None
            fallback.lost(reason)
        if self.side is not None:
            side, self.side = self.side, None
            side.lost(reason)


class VLESSServerFactory(InboundFactory):
    """Builds :class:`VLESSServerProtocol`; one per inbound (all its ports share it)."""

    protocol = VLESSServerProtocol  # type: ignore[assignment]

    def __init__(self, accounts: Sequence[VLESSAccount], tunnels: TunnelService,
                 policy: Policy = DEFAULT_POLICY, tag: str = "", *,
                 fallbacks: Sequence[Fallback] = (), guard: ProbeGuard | None = None) -> None:
        super().__init__(tunnels, tag)
        #: accounts by UUID (the last of equal ids wins, as in 4.34)
        self.users: dict[bytes, VLESSAccount] = {a.uuid: a for a in accounts}
        self.policy = policy
        self.fallbacks = list(fallbacks)
        self.table = fallback_table(self.fallbacks)
        self.guard = guard or ProbeGuard()
        self.refused = 0
        self.fellBack = 0
        self.accepted: dict[int, int] = {1: 0, 2: 0, 3: 0}

    def choose(self, alpn: str | None, first: bytes) -> Fallback | None:
        """The fallback for a connection that is not VLESS."""
        return choose_in(self.table, alpn, first)
