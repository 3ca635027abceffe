"""Hand a connection to its fallback: connect to ``dest``, write the PROXY header (``xver``)
and the bytes already read, then relay both ways (:class:`vtwist.tunnel.relay.Relay`).

The caller (the VLESS or Trojan server protocol) keeps receiving its transport's events and
reports them to the returned :class:`FallbackLink`: ``dataReceived`` -> :meth:`received`,
``readConnectionLost`` -> :meth:`eof`, ``connectionLost`` -> :meth:`lost`. The fallback
target sees exactly the client's bytes, in order, with nothing added but the PROXY header.

With ``tunnels`` (the inbound's :class:`~vtwist.tunnel.service.TunnelService`) the bytes
count toward the inbound's traffic counters (``inbound>>>TAG>>>traffic>>>…`` and the
metrics), as V2Ray 4.34 counts every byte of an inbound's connections, and the connection is
an open one while it lasts; there is no outbound and no user.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.address import format_address
from vtwist.policy import DEFAULT_LEVEL, LevelPolicy
from vtwist.proxy.fallback.choose import choose_fallback
from vtwist.proxy.fallback.proxyheader import proxy_header
from vtwist.proxy.fallback.settings import Fallback
from vtwist.tunnel.held import HeldInput
from vtwist.tunnel.relay import INBOUND, Relay, RelayProtocol, RelayProtocolFactory

__all__ = ["FallbackLink", "choose_fallback", "hand_off", "negotiated_alpn"]

log = Logger(namespace="vtwist.fallback")

#: Dial attempts before a fallback fails, and the growing pause between them (seconds), as
#: V2Ray 4.34's ``retry.ExponentialBackoff(5, 100)``: 0, 0.1, 0.2, 0.3 s.
DIAL_ATTEMPTS = 5
RETRY_STEP = 0.1


def negotiated_alpn(transport: Any) -> str | None:
    """The TLS ALPN the connection negotiated, when ``transport`` is vtwist's TLS layer
    (``TLSLayer.negotiatedProtocol``); None for plain TCP and for a layer above TLS
    (WebSocket), as 4.34 sees only a ``*tls.Conn``'s ALPN."""
    try:
        value = getattr(transport, "negotiatedProtocol", None)
    except Exception:  # noqa: BLE001 - a transport already gone has no ALPN
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else None


def _address(addr: Any) -> tuple[str, int] | None:
    host, port = getattr(addr, "host", None), getattr(addr, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return host, port
    return None


def fallback_endpoint(reactor: Any, fallback: Fallback) -> Any:
    """The client endpoint that reaches ``fallback.dest``."""
    if fallback.type == "unix":
        return UNIXClientEndpoint(reactor, fallback.unix_address)
    host, port = fallback.host_port
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port)
    return HostnameEndpoint(reactor, host, port)


class FallbackLink:
    """One connection handed to a fallback; its protocol reports its events here."""

    def __init__(self, transport: Any, fallback: Fallback, early: bytes, reactor: Any,
                 policy: LevelPolicy = DEFAULT_LEVEL, tunnels: Any = None,
                 inbound_tag: str = "") -> None:
        self.transport = transport
        self.stats = getattr(tunnels, "stats", None)
        self.inbound_tag = inbound_tag
        self._flow: Any = None
        self.fallback = fallback
        self.reactor = reactor
        self.policy = policy
        self.relay: Relay | None = None
        self.held: HeldInput | None = HeldInput()
        self.closed = False
        self._timer: IDelayedCall | None = None
        peer, host = _address(transport.getPeer()), _address(transport.getHost())
        self.source = format_address(transport.getPeer())
        self.header = b""
        if fallback.xver and peer is not None and host is not None:
            self.header = proxy_header(fallback.xver, peer, host)
        self.early = early
        transport.pauseProducing()
        self.attempts = 0
        self.gaveUp = False
        self._connecting: Any = None
        self._retry: IDelayedCall | None = None
        self._timer = reactor.callLater(policy.connect_timeout, self._timedOut)
        self._dial()

    def _dial(self) -> None:
        """One attempt; 4.34 makes up to :data:`DIAL_ATTEMPTS`, 0/100/200/300 ms apart."""
        self._retry = None
        self.attempts += 1
        self._connecting = fallback_endpoint(self.reactor, self.fallback).connect(
            RelayProtocolFactory())
        self._connecting.addCallbacks(self._connected, self._failed)

    def _timedOut(self) -> None:
        self._timer = None
        self.gaveUp = True
        self._stopDialling()

    def _stopDialling(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._retry = None
            self._failed(Failure(TimeoutError("no connection within the connect deadline")))
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.cancel()

    # -- the client side's events ------------------------------------------------------
    def received(self, data: bytes) -> None:
        """More bytes from the client."""
        if self.relay is not None:
            self.relay.received(INBOUND, data)
        elif self.held is not None:
            self.held.data(data)

    def eof(self) -> None:
        """The client half-closed."""
        if self.relay is not None:
            self.relay.eof(INBOUND)
        elif self.held is not None:
            self.held.eof = True

    def lost(self, reason: Failure | None = None) -> None:
        """The client's connection is gone."""
        self.closed = True
        if self.relay is not None:
            self.relay.lost(INBOUND, reason)
        else:
            self._cancelTimer()
            self._stopDialling()

    # -- the fallback side -------------------------------------------------------------
    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _connected(self, proto: RelayProtocol) -> None:
        self._cancelTimer()
        self._connecting = None
        if self.closed:
            proto.transport.loseConnection()
            return
        out = proto.transport
        first = [piece for piece in (self.header, self.early) if piece]
        if first:
            out.writeSequence(first)
        relay = Relay(self.transport, out, self.reactor, self.policy,
                      onFinish=self._finished)
        self.relay = relay
        stats = self.stats
        if stats is not None:
            self._flow = stats.track(relay.bytes, *stats.counters_for(
                self.inbound_tag, "", None))
            stats.connection_opened()
        relay.bytes[INBOUND] += len(self.early)  # read before the relay, sent above
        self.early = b""
        proto.attach(relay)
        held, self.held = self.held, None
        if held is not None and not relay.finished:
            held.replay(relay, INBOUND, self.transport)

    def _finished(self) -> None:
        """The relay ended: settle the counters."""
        stats, flow, self._flow = self.stats, self._flow, None
        if stats is not None and flow is not None:
            stats.untrack(flow)
            stats.connection_closed()

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if self.closed:
            self._cancelTimer()
            return
        if not self.gaveUp and self.attempts < DIAL_ATTEMPTS and failure.check(ConnectError):
            delay = RETRY_STEP * (self.attempts - 1)
            self._retry = self.reactor.callLater(delay, self._dial)
            return
        self._cancelTimer()
        self.held = None
        log.info("fallback for {source} to {dest} failed: {why}", source=self.source,
                 dest=self.fallback.dest.rstrip("\0"), why=failure.getErrorMessage())
        self.transport.loseConnection()


def hand_off(transport: Any, fallback: Fallback, early: bytes, reactor: Any,
             policy: LevelPolicy = DEFAULT_LEVEL, tunnels: Any = None,
             inbound_tag: str = "") -> FallbackLink:
    """Connect ``transport``'s client to ``fallback``: the PROXY header (``xver``), then
    ``early`` (every byte read so far), then a relay both ways. Returns the
    :class:`FallbackLink` the caller reports its protocol's later events to. With
    ``tunnels`` the bytes count toward inbound ``inbound_tag``'s traffic."""
    return FallbackLink(transport, fallback, early, reactor, policy, tunnels, inbound_tag)
