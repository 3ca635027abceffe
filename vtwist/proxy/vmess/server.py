"""VMess inbound: many users on one port, dispatch, relay with backpressure.

After a valid header the decoded stream is handed to the relay as an ordinary transport
(:class:`~vtwist.proxy.vmess.transport.VMessTransport`). A bad header, a replay or a
clock out of the window is never answered: the connection is read and discarded, then
closed after a bounded random delay with a FIN (never a reset), and one log line says why.
How many such connections are held at once is capped.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, format_address
from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.vmess.body import SEC_LEGACY, SEC_NONE, BodyError
from vtwist.proxy.vmess.handshake import (
    NEED_MORE,
    Rejected,
    RequestParsed,
    ServerHandshake,
)
from vtwist.proxy.vmess.header import CMD_MUX, CMD_TCP, CMD_UDP
from vtwist.proxy.vmess.replay import AuthIDFilter, SessionHistory
from vtwist.proxy.vmess.transport import VMessTransport
from vtwist.proxy.vmess.users import Account, UserTable
from vtwist.reactors import resolve_reactor
from vtwist.relay import INBOUND, Relay

log = Logger(namespace="vtwist.vmess.inbound")

#: How often a listening inbound slides the legacy auth table (V2Ray refreshes every 10 s),
#: so a legacy header or a probe after a quiet spell finds it current instead of stalling
#: the reactor while up to 241 seconds of hashes are computed.
LEGACY_REFRESH = 10.0


@dataclass
class ProbeGuard:
    """How refused connections are held: random close delay and a cap on how many."""

    min_delay: float = 2.0
    max_delay: float = 8.0
    linger: float = 10.0  # after our FIN, how long we keep reading before closing anyway
    max_held: int = 512
    held: int = 0
    rng: random.Random = field(default_factory=random.SystemRandom)

    def delay(self) -> float:
        """A close delay drawn uniformly from [min_delay, max_delay]."""
        return self.rng.uniform(self.min_delay, self.max_delay)


class VMessServerState:
    """What all connections of one inbound share: users, replay filters, probe guard."""

    def __init__(self, accounts: list[Account], legacy: bool = True,
                 disable_insecure: bool = False, guard: ProbeGuard | None = None) -> None:
        self.users = UserTable(accounts, legacy=legacy)
        if legacy and accounts:
            # Build the legacy hash table now rather than stall on the first legacy header.
            self.users.legacy_table.update(time.time())
        self.auth_filter = AuthIDFilter()
        self.sessions = SessionHistory()
        self.disable_insecure = disable_insecure
        self.guard = guard or ProbeGuard()


_HANDSHAKE, _PROBE, _CONNECTING, _RELAY, _UDP, _DONE = range(6)


@implementer(IHalfCloseableProtocol)
class VMessServerProtocol(Protocol):
    """One inbound VMess connection."""

    def __init__(self, factory: VMessServerFactory) -> None:
        self.factory = factory
        self.state = _HANDSHAKE
        self.request: RequestParsed | None = None
        self.inner: VMessTransport | None = None
        self.decoder: Any = None
        self.relay: Relay | None = None
        self.discarded = 0
        self._timer: Any = None
        self._held = False
        self._pending: list[Any] = []
        self._pendingEOF = False
        self._connecting: Any = None
        self._session: Any = None
        self._udp_uplink_done = False

    # -- set-up ----------------------------------------------------------------------
    @property
    def reactor(self) -> Any:
        """The factory's reactor (a Clock in tests)."""
        return self.factory.reactor

    def connectionMade(self) -> None:
        """Start the handshake deadline."""
        f = self.factory
        f.protocols.add(self)
        self._start = self.reactor.seconds()
        self.handshake = ServerHandshake(f.state.users, f.state.auth_filter,
                                         f.state.sessions, clock=f.now)
        self._timer = self.reactor.callLater(f.policy.level(0).handshake, self._timeout)

    def _peer(self) -> str:
        return format_address(self.transport.getPeer())

    def _cancelTimer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timeout(self) -> None:
        self._timer = None
        if self.state == _HANDSHAKE:
            self._probe(f"no complete header within the handshake timeout "
                        f"({self.handshake.buffered} bytes)")
        elif self.state == _CONNECTING:
            self.transport.loseConnection()

    # -- input -------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Handshake, then body decoding; discarded in probe mode."""
        state = self.state
        if state == _RELAY or state == _CONNECTING or state == _UDP:
            self._body(data)
        elif state == _HANDSHAKE:
            result = self.handshake.feed(data)
            if result is NEED_MORE:
                return
            self.handshake = None  # free the header buffer
            if isinstance(result, Rejected):
                self._probe(result.reason)
            else:
                self._accept(result)
        else:
            self.discarded += len(data)

    def _accept(self, r: RequestParsed) -> None:
        self._cancelTimer()
        self.request = r
        f = self.factory
        acct = r.account
        if f.state.disable_insecure and r.security in (SEC_NONE, SEC_LEGACY):
            self._probe(f"insecure encryption refused for user {acct.label}")
            return
        if r.command == CMD_MUX:
            self._probe(f"Mux.Cool is not supported (user {acct.label})")
            return
        f.accepted[(r.aead, r.security, r.command)] += 1
        self.decoder = r.body_decoder()
        header, encoder = r.response_writer()
        self.inner = VMessTransport(self.transport, encoder, lambda: header)
        if r.command == CMD_TCP:
            self.state = _CONNECTING
            self.transport.pauseProducing()
            self._timer = self.reactor.callLater(f.policy.level(acct.level).handshake + 30,
                                                 self._timeout)
            d = f.dispatcher.connect(r.destination, inbound_tag=f.tag, source=self._peer(),
                                     email=acct.email or None)
            self._connecting = d
            d.addCallbacks(self._connected, self._connectFailed)
        elif r.command == CMD_UDP:
            self.state = _UDP
            self._openUDP(r.destination)
        if r.leftover:
            self._body(r.leftover)

    def _body(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except BodyError as e:
            log.info("vmess from {peer}: {why}; closing", peer=self._peer(), why=e)
            self._close(abort=True)
            return
        if payloads:
            if self.state == _RELAY:
                self.relay.receivedSequence(INBOUND, payloads)
            elif self.state == _UDP:
                for p in payloads:
                    self._session.send(bytes(p), self.request.destination)
                self._activity = True
            else:
                self._pending.extend(payloads)
        if self.decoder.eof:
            self._uplinkEnded()

    def _uplinkEnded(self) -> None:
        if self.state == _RELAY:
            self.relay.eof(INBOUND)
        elif self.state == _CONNECTING:
            self._pendingEOF = True
        elif self.state == _UDP and not self._udp_uplink_done:
            self._udp_uplink_done = True
            self._activity = False
            self._armUDP(self.factory.policy.level(self.request.account.level).downlink_only)

    # -- TCP relay -----------------------------------------------------------------------
    def _connected(self, outbound: Any) -> None:
        self._connecting = None
        if self.state != _CONNECTING:
            outbound.transport.loseConnection()
            return
        self._cancelTimer()
        self.state = _RELAY
        acct = self.request.account
        self.relay = Relay(self.inner, outbound.transport, self.reactor,
                           self.factory.policy.level(acct.level))
        outbound.attach(self.relay)
        pending, self._pending = self._pending, []
        if pending:
            self.relay.receivedSequence(INBOUND, pending)
        if self._pendingEOF:
            self.relay.eof(INBOUND)
        if not self.relay.finished:
            self.transport.resumeProducing()

    def _connectFailed(self, failure: Failure) -> None:
        self._connecting = None
        if self.state != _CONNECTING:
            return
        log.info("vmess: {dest} for user {user} failed: {why}", dest=self.request.destination,
                 user=self.request.account.label, why=failure.getErrorMessage())
        self._close()

    # -- UDP -------------------------------------------------------------------------------
    def _openUDP(self, dest: Destination) -> None:
        f = self.factory
        acct = self.request.account
        self._activity = False
        try:
            self._session = f.dispatcher.packetSession(
                dest, self._udpReply, self._close, inbound_tag=f.tag, source=self._peer(),
                email=acct.email or None)
        except Exception as e:  # noqa: BLE001 - no outbound: close quietly
            log.info("vmess UDP {dest}: {why}", dest=dest, why=e)
            self._close()
            return
        self._armUDP(f.policy.level(acct.level).conn_idle)

    def _udpReply(self, data: bytes, source: Destination) -> None:
        if self.state == _UDP and self.inner is not None:
            self._activity = True
            self.inner.write(data)

    def _armUDP(self, timeout: float) -> None:
        self._cancelTimer()
        self._udpTimeout = timeout
        self._timer = self.reactor.callLater(timeout, self._udpCheck)

    def _udpCheck(self) -> None:
        self._timer = None
        if self.state != _UDP:
            return
        if self._activity:
            self._activity = False
            self._armUDP(self._udpTimeout)
            return
        self._close()

    # -- probes ----------------------------------------------------------------------------
    def _probe(self, reason: str) -> None:
        """Never answer: discard input, FIN after a bounded random delay, read until EOF."""
        self._cancelTimer()
        self.state = _PROBE
        guard = self.factory.state.guard
        log.info("vmess: refused connection from {peer}: {reason}", peer=self._peer(),
                 reason=reason)
        self.factory.refused += 1
        if guard.held >= guard.max_held:
            self.transport.loseConnection()
            return
        guard.held += 1
        self._held = True
        # FIN at start + handshake deadline + random delay, whenever (and whether) a verdict
        # was reached: the timing tells a prober nothing about its bytes.
        deadline = self._start + self.factory.policy.level(0).handshake
        wait = max(0.0, deadline - self.reactor.seconds()) + guard.delay()
        self._timer = self.reactor.callLater(wait, self._probeFin)

    def _probeFin(self) -> None:
        self._timer = self.reactor.callLater(self.factory.state.guard.linger,
                                             self.transport.loseConnection)
        self.transport.loseWriteConnection()

    # -- ending ----------------------------------------------------------------------------
    def _close(self, abort: bool = False) -> None:
        if self.state == _DONE:
            return
        if self.relay is not None and not abort:
            self.relay.finish()
            return
        self.state = _DONE
        self._cancelTimer()
        if self._session is not None:
            session, self._session = self._session, None
            session.close()
        if self.inner is not None and not abort:
            self.inner.loseConnection()
        else:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client half-closed TCP: at a chunk boundary that ends the uplink."""
        if self.state in (_PROBE, _HANDSHAKE, _DONE):
            self.transport.loseConnection()
            return
        if self.decoder.at_boundary:
            if not self.decoder.eof:
                self._uplinkEnded()
        else:
            self._close(abort=True)

    def writeConnectionLost(self) -> None:
        """Our FIN went out (probe mode)."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Release everything this connection held."""
        self.state = _DONE  # before cancelling: a cancelled connect is not a failure to log
        self.factory.protocols.discard(self)
        self._cancelTimer()
        if self._held:
            self._held = False
            self.factory.state.guard.held -= 1
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.cancel()
        if self._session is not None:
            session, self._session = self._session, None
            session.close()
        if self.relay is not None:
            self.relay.lost(INBOUND, reason)


class VMessServerFactory(Factory):
    """Builds :class:`VMessServerProtocol`; one per inbound port, state may be shared."""

    def __init__(self, state: VMessServerState, dispatcher: Any, reactor: Any = None,
                 policy: Policy = DEFAULT_POLICY, tag: str = "",
                 now: Any = None) -> None:
        self.state = state
        self.dispatcher = dispatcher
        self.reactor = resolve_reactor(reactor)
        self.policy = policy
        self.tag = tag
        self.now = now or time.time
        self.refused = 0
        #: live connections (for shutdown and tests)
        self.protocols: set[VMessServerProtocol] = set()
        #: accepted requests by (AEAD header?, security value, command)
        self.accepted: Counter[tuple[bool, int, int]] = Counter()
        self._refresh: LoopingCall | None = None

    def startFactory(self) -> None:
        """Keep the legacy auth table current while listening."""
        users = self.state.users
        if users.legacy_enabled and len(users):
            self._refresh = LoopingCall(lambda: users.legacy_table.update(self.now()))
            self._refresh.clock = self.reactor
            self._refresh.start(LEGACY_REFRESH, now=True)

    def stopFactory(self) -> None:
        """Stop refreshing the legacy table."""
        if self._refresh is not None:
            refresh, self._refresh = self._refresh, None
            refresh.stop()

    def buildProtocol(self, addr: Any) -> VMessServerProtocol:
        """A protocol for one connection."""
        return VMessServerProtocol(self)
