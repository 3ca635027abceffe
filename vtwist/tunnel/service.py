"""The tunnel service: the one place that connects an inbound to an outbound.

Every inbound (SOCKS, VMess, and every protocol and Mux.Cool sub-stream to come) calls
:meth:`TunnelService.openStream` for a stream and :meth:`TunnelService.openPackets` for UDP.
The service asks the dispatcher for an outbound, writes the access line, connects within the
policy's deadline and joins both sides; inbounds report refused clients through
:meth:`TunnelService.reject`, so every access line, accepted or rejected, comes from here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.address import Destination
from vtwist.interfaces import IDispatcher, IInboundReply, IOutbound
from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.tunnel.access import AccessLog
from vtwist.tunnel.failures import ConnectTimeout
from vtwist.tunnel.packets import PacketTunnel
from vtwist.tunnel.relay import RelayProtocol, RelayProtocolFactory
from vtwist.tunnel.stats import StatsManager, refusal_reason
from vtwist.tunnel.stream import StreamTunnel

log = Logger(namespace="vtwist.dispatch")


class TunnelService:
    """Joins inbound streams and UDP sessions to the outbounds the dispatcher picks."""

    def __init__(self, dispatcher: IDispatcher, clock: IReactorTime,
                 access: AccessLog | None = None, stats: StatsManager | None = None) -> None:
        self.dispatcher = dispatcher
        self.clock = clock
        self.access = access if access is not None else AccessLog(
            getattr(dispatcher, "log_access", True))
        #: traffic counters and connection counts (``stats``, ``metrics``); None: neither
        self.stats = stats

    # -- streams ----------------------------------------------------------------------
    def openStream(self, transport: Any, destination: Destination, reply: IInboundReply, *,
                   early: list[Any] | None = None, inbound_tag: str = "", source: str = "",
                   email: str | None = None, policy: LevelPolicy = DEFAULT_LEVEL,
                   sniff: tuple[str, ...] = ()) -> StreamTunnel:
        """Join the inbound ``transport`` to ``destination``.

        ``early`` holds the bytes the client sent after its handshake. The inbound then
        reports its side's events to the returned tunnel. ``reply`` answers the client once
        the outcome is known; on failure it also closes the inbound connection. ``sniff``
        (the inbound's ``destOverride``: ``http``, ``tls``) routes by the domain the client's
        first bytes name; the reply then goes out before connecting.
        """
        tunnel = StreamTunnel(self, transport, destination, reply, policy,
                              inbound_tag=inbound_tag, source=source, email=email)
        tunnel.start(early or [], sniff)
        return tunnel

    def connect(self, destination: Destination, *, inbound_tag: str | None = None,
                source: str = "", email: str | None = None,
                timeout: float | None = None, protocol: str = "") -> Deferred[RelayProtocol]:
        """Route ``destination`` and connect; fires with a paused, unattached
        :class:`~vtwist.tunnel.relay.RelayProtocol`. Writes the accepted access line.
        Past ``timeout`` seconds the attempt is cancelled and fails with a ``TimeoutError``:
        :class:`~vtwist.tunnel.failures.ConnectTimeout`, or the dial's own
        ``DialTimeoutError`` when its endpoint keeps the deadline (``connectWithin``). ``protocol``: what sniffing
        recognised, for the routing rules' ``protocol`` field."""
        d, timed = self._connect(destination, inbound_tag, source, email, protocol, timeout)
        if timeout is not None and not d.called and not timed:
            d.addTimeout(timeout, self.clock,
                         onTimeoutCancel=lambda result, after: Failure(ConnectTimeout(after)))
        return d

    def _connect(self, destination: Destination, inbound_tag: str | None, source: str,
                 email: str | None, protocol: str, timeout: float | None
                 ) -> tuple[Deferred[RelayProtocol], bool]:
        """Route and connect: the Deferred, and whether the dial keeps ``timeout`` itself
        (routing answered at once and the outbound's endpoint has ``connectWithin``, a
        plain TCP dial: its own connect timer, one timer per dial, not two)."""
        try:
            if protocol:
                chosen = self.dispatcher.choose(destination, inbound_tag, source, email,
                                                protocol=protocol)
            else:
                chosen = self.dispatcher.choose(destination, inbound_tag, source, email)
        except Exception:  # noqa: BLE001 - NoOutbound and friends become the errback
            return fail(), False
        timed = False

        def connectThrough(outbound: IOutbound,
                           within: float | None = None) -> Deferred[RelayProtocol]:
            nonlocal timed
            self.access.accepted(source, destination, inbound_tag, outbound.tag, email)

            def tagged(protocol: RelayProtocol) -> RelayProtocol:
                protocol.outbound_tag = outbound.tag
                return protocol

            endpoint = outbound.endpointFor(destination)
            connect_within = getattr(endpoint, "connectWithin", None) \
                if within is not None else None
            if connect_within is not None:
                timed = True
                return connect_within(RelayProtocolFactory(), within).addCallback(tagged)
            return endpoint.connect(RelayProtocolFactory()).addCallback(tagged)

        if isinstance(chosen, Deferred):
            return chosen.addCallback(connectThrough), False
        try:
            return connectThrough(chosen, timeout), timed
        except Exception:  # noqa: BLE001 - becomes the caller's errback
            return fail(), False

    # -- packets ----------------------------------------------------------------------
    def openPackets(self, destination: Destination,
                    onPacket: Callable[[bytes, Destination], None],
                    onClose: Callable[[], None], *, inbound_tag: str | None = None,
                    source: str = "", email: str | None = None,
                    idle_timeout: float | None = None,
                    policy: LevelPolicy | None = None) -> PacketTunnel:
        """A UDP session for traffic whose first datagram goes to ``destination``.

        ``policy`` (the user's level) switches the user's traffic counters.

        Datagrams wait (a bounded few) while routing resolves. Raises
        :class:`~vtwist.tunnel.dispatcher.NoOutbound` when there is no outbound at all.
        """
        chosen = self.dispatcher.choose(destination, inbound_tag, source, email)
        tunnel = PacketTunnel(self.clock, onPacket, onClose, idle_timeout)
        started = self.clock.seconds()

        def counted(outbound: IOutbound) -> None:
            stats = self.stats
            flow = None
            if stats is not None:
                flow = stats.track(tunnel.bytes, *stats.counters_for(
                    inbound_tag or "", outbound.tag, email,
                    policy is not None and policy.stats_user_uplink,
                    policy is not None and policy.stats_user_downlink))
                stats.connection_opened()

            def finished() -> None:
                if stats is not None:
                    stats.untrack(flow)  # type: ignore[arg-type]
                    stats.connection_closed()
                self.access.closed(source, destination, inbound_tag, outbound.tag, email,
                                   tunnel.bytes[0], tunnel.bytes[1],
                                   self.clock.seconds() - started)

            tunnel.onFinish = finished

        if not isinstance(chosen, Deferred):
            self.access.accepted(source, destination, inbound_tag, chosen.tag, email)
            counted(chosen)
            tunnel.open(chosen)
            return tunnel

        def opened(outbound: IOutbound) -> None:
            if not tunnel.closed:
                self.access.accepted(source, destination, inbound_tag, outbound.tag, email)
                counted(outbound)
            tunnel.open(outbound)

        def failed(failure: Failure) -> None:
            if not tunnel.closed:
                log.info("UDP to {dest}: {why}", dest=destination, why=failure.getErrorMessage())
            tunnel.fail(failure.getErrorMessage())

        tunnel.deciding = chosen.addCallbacks(opened, failed)
        return tunnel

    # -- metering a connection the caller relays itself ------------------------------------
    def meter(self, destination: Destination, outbound_tag: str, *, inbound_tag: str = "",
              source: str = "", email: str | None = None,
              policy: LevelPolicy = DEFAULT_LEVEL) -> Meter:
        """Count a connection the caller relays itself (the HTTP proxy's plain requests):
        it adds to ``meter.counts`` ([uplink, downlink]) and calls ``meter.close()`` once."""
        return Meter(self, destination, outbound_tag, inbound_tag, source, email, policy)

    # -- refusals ---------------------------------------------------------------------
    def reject(self, source: str, protocol: str, why: str) -> None:
        """An inbound refused a client: one access line."""
        self.access.rejected(source, protocol, why)
        if self.stats is not None:
            self.stats.connection_failed(refusal_reason(protocol, why))


class Meter:
    """One connection's byte counts, fed into the counters; the close line at the end."""

    def __init__(self, service: TunnelService, destination: Destination, outbound_tag: str,
                 inbound_tag: str, source: str, email: str | None,
                 policy: LevelPolicy) -> None:
        self.service = service
        self.destination = destination
        self.outbound_tag = outbound_tag
        self.inbound_tag = inbound_tag
        self.source = source
        self.email = email
        self.started = service.clock.seconds()
        #: bytes to the target, bytes from it: the caller adds to these
        self.counts = [0, 0]
        self.closed = False
        stats = service.stats
        self.flow = None
        if stats is not None:
            self.flow = stats.track(self.counts, *stats.counters_for(
                inbound_tag, outbound_tag, email, policy.stats_user_uplink,
                policy.stats_user_downlink))
            stats.connection_opened()

    def close(self) -> None:
        """The connection ended: settle the counters, write the close line (once)."""
        if self.closed:
            return
        self.closed = True
        stats = self.service.stats
        if stats is not None and self.flow is not None:
            stats.untrack(self.flow)
            stats.connection_closed()
        self.service.access.closed(self.source, self.destination, self.inbound_tag,
                                   self.outbound_tag, self.email, self.counts[0],
                                   self.counts[1], self.service.clock.seconds() - self.started)
