"""One inbound connection joined to its outbound: :class:`StreamTunnel`.

The inbound protocol hands over its transport after its handshake and from then on reports
its side's events here (:meth:`~StreamTunnel.received`, :meth:`~StreamTunnel.eof`,
:meth:`~StreamTunnel.lost`). While the outbound connects, what the inbound sends is held and
its transport paused (from its first bytes on: most clients wait for the reply); once
connected, the inbound's reply goes out, the relay joins both transports, and the held input
is replayed (resume, then replay).

With sniffing (the inbound's ``sniffing.destOverride``), the reply goes out first, as in
V2Ray: the client's first bytes are read (at most :data:`SNIFF_TIMEOUT` seconds, a bounded
amount) and, when they name a domain (HTTP ``Host``, TLS SNI), that domain is routed and
connected to instead of the address the client asked for. A failure after that early reply
only closes the inbound.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.address import Destination
from vtwist.interfaces import IInboundReply
from vtwist.policy import LevelPolicy
from vtwist.sansio import NEED_DATA
from vtwist.transport.layer import set_no_delay
from vtwist.tunnel.failures import classify
from vtwist.tunnel.held import HeldInput
from vtwist.tunnel.relay import INBOUND, Relay, RelayProtocol
from vtwist.tunnel.sniff import Sniffed, Sniffer, should_override
from vtwist.tunnel.stats import Flow, failure_reason

if TYPE_CHECKING:
    from vtwist.tunnel.service import TunnelService

log = Logger(namespace="vtwist.tunnel")


#: How long the tunnel waits for the client's first bytes when sniffing (V2Ray: two reads
#: of at most 100 ms each).
SNIFF_TIMEOUT = 0.3


class Phase(Enum):
    """Where one tunnel is."""

    SNIFFING = "sniffing"
    CONNECTING = "connecting"
    RELAY = "relay"
    CLOSED = "closed"


class StreamTunnel:
    """One stream from an inbound through the outbound the dispatcher picks."""

    def __init__(self, service: TunnelService, transport: Any, destination: Destination,
                 reply: IInboundReply, policy: LevelPolicy, *, inbound_tag: str = "",
                 source: str = "", email: str | None = None) -> None:
        self.service = service
        self.transport = transport
        self.destination = destination
        self.reply = reply
        self.policy = policy
        self.inbound_tag = inbound_tag
        self.source = source
        self.email = email
        self.phase = Phase.CONNECTING
        self.relay: Relay | None = None
        self.held: HeldInput | None = HeldInput()
        #: the inbound's reply went out before connecting (sniffing)
        self.replied = False
        self.sniffer: Sniffer | None = None
        self.sniffOverride: tuple[str, ...] = ()
        #: what sniffing recognised (``http1``, ``tls``, ``bittorrent``), for routing
        self.protocol = ""
        self._connecting: Deferred[RelayProtocol] | None = None
        self._sniffTimer: IDelayedCall | None = None
        self.started = service.clock.seconds()
        self.outbound_tag = ""
        self._flow: Flow | None = None

    def start(self, early: list[Any], sniff: tuple[str, ...] = ()) -> None:
        """Keep ``early``; sniff first when ``sniff`` names protocols; connect."""
        sniffing = bool(sniff) and self.destination.network == "tcp"
        if early and sniffing:
            self.held.extend(early)  # type: ignore[union-attr]
        elif early:  # sent before the relay exists: paused until it does
            self.held.hold(early, self.transport)  # type: ignore[union-attr]
        if sniffing:
            self.phase = Phase.SNIFFING
            self.sniffer = Sniffer()  # every sniffer, as 4.34: routing sees the protocol
            self.sniffOverride = sniff
            self.replied = True
            self.reply.succeeded(None)
            self._sniffTimer = self.service.clock.callLater(SNIFF_TIMEOUT, self._sniffed, None)
            self._sniff()
            return
        self._connect()

    def _sniff(self) -> None:
        """Look at what the client sent so far; go on once there is a verdict."""
        if self.phase is not Phase.SNIFFING or self.held is None:
            return
        verdict = self.sniffer.sniff(b"".join(self.held.chunks))  # type: ignore[union-attr]
        if verdict is not NEED_DATA:
            self._sniffed(verdict)  # type: ignore[arg-type]

    def _sniffed(self, verdict: Sniffed | None) -> None:
        if self.phase is not Phase.SNIFFING:
            return
        self._cancelSniffTimer()
        self.sniffer = None
        if verdict is not None:
            self.protocol = verdict.protocol
        if verdict is not None and verdict.domain and should_override(verdict,
                                                                      self.sniffOverride):
            log.debug("{source}: sniffed {protocol} domain {domain} for {dest}",
                      source=self.source, protocol=verdict.protocol, domain=verdict.domain,
                      dest=self.destination)
            self.destination = Destination.tcp(verdict.domain, self.destination.port)
        self.phase = Phase.CONNECTING
        self._connect()

    def _connect(self) -> None:
        """Connect within the policy's deadline (the inbound is paused once it sends more
        than the relay can take yet: :meth:`HeldInput.hold`)."""
        d = self.service.connect(self.destination, inbound_tag=self.inbound_tag,
                                 source=self.source, email=self.email,
                                 timeout=self.policy.connect_timeout, protocol=self.protocol)
        if not d.called:
            self._connecting = d
        d.addCallbacks(self._connected, self._failed)

    # -- the inbound side's events ------------------------------------------------------
    def received(self, data: Any) -> None:
        """Bytes from the inbound's client."""
        relay = self.relay
        if relay is not None:
            relay.received(INBOUND, data)
        elif self.held is not None:
            if self.phase is Phase.SNIFFING:
                self.held.data(data)
                self._sniff()
            else:
                self.held.hold([data], self.transport)

    def receivedSequence(self, chunks: list[Any]) -> None:
        """Several pieces from the inbound's client at once."""
        relay = self.relay
        if relay is not None:
            relay.receivedSequence(INBOUND, chunks)
        elif self.held is not None:
            if self.phase is Phase.SNIFFING:
                self.held.extend(chunks)
                self._sniff()
            else:
                self.held.hold(chunks, self.transport)

    def eof(self) -> None:
        """The inbound's client will send no more."""
        if self.relay is not None:
            self.relay.eof(INBOUND)
        elif self.held is not None:
            self.held.eof = True
            if self.phase is Phase.SNIFFING:
                self._sniffed(None)  # nothing more will come to sniff

    def lost(self, reason: Failure | None = None) -> None:
        """The inbound's connection is gone."""
        phase, self.phase = self.phase, Phase.CLOSED
        self._cancelSniffTimer()
        self.held = None
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.cancel()
        if phase is Phase.RELAY and self.relay is not None:
            self.relay.lost(INBOUND, reason)

    def close(self) -> None:
        """The inbound ends the tunnel (e.g. its stream turned out malformed)."""
        if self.relay is not None:
            self.relay.finish()
        else:
            self.lost(None)
            self.transport.loseConnection()

    # -- the outbound side ----------------------------------------------------------------
    def _cancelSniffTimer(self) -> None:
        if self._sniffTimer is not None:
            if self._sniffTimer.active():
                self._sniffTimer.cancel()
            self._sniffTimer = None

    def _connected(self, outbound: RelayProtocol) -> None:
        self._connecting = None
        if self.phase is not Phase.CONNECTING:  # the client left meanwhile
            outbound.transport.loseConnection()
            return
        self.phase = Phase.RELAY
        set_no_delay(outbound.transport)  # relayed small writes must not wait
        if not self.replied:
            reply = self.reply  # the bound address costs a getsockname: only if it is used
            reply.succeeded(outbound.transport.getHost()
                            if getattr(reply, "wantsBound", True) else None)
        relay = Relay(self.transport, outbound.transport, self.service.clock, self.policy,
                      onFinish=self._finished)
        self.relay = relay
        self.outbound_tag = getattr(outbound, "outbound_tag", "")
        stats = self.service.stats
        if stats is not None:
            policy = self.policy
            self._flow = stats.track(relay.bytes, *stats.counters_for(
                self.inbound_tag, self.outbound_tag, self.email,
                policy.stats_user_uplink, policy.stats_user_downlink))
            stats.connection_opened()
        outbound.attach(relay)
        held, self.held = self.held, None
        if not relay.finished and held is not None:
            held.replay(relay, INBOUND, held.pausedTransport(self.transport))

    def _finished(self) -> None:
        """The relay ended: settle the counters, write the close line."""
        relay = self.relay
        assert relay is not None
        stats = self.service.stats
        if stats is not None and self._flow is not None:
            stats.untrack(self._flow)
            stats.connection_closed()
        self.service.access.closed(self.source, self.destination, self.inbound_tag,
                                   self.outbound_tag, self.email, relay.bytes[INBOUND],
                                   relay.bytes[1 - INBOUND],
                                   self.service.clock.seconds() - self.started)

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if self.phase is not Phase.CONNECTING:
            return
        self.phase = Phase.CLOSED
        self.held = None
        kind = classify(failure)
        if self.service.stats is not None:
            self.service.stats.connection_failed(failure_reason(failure, kind))
        log.info("{source} to {dest} failed ({kind}): {why}", source=self.source,
                 dest=self.destination, kind=kind.value, why=failure.getErrorMessage())
        if self.replied:  # the client was told "connected" already: all we can do is close
            self.transport.loseConnection()
        else:
            self.reply.failed(kind, failure)
