"""VMess inbound: many users on one port; after the header, a tunnel or a packet session.

After a valid header the decoded stream is handed to the tunnel service as an ordinary
transport (:class:`~vtwist.proxy.vmess.transport.VMessTransport`), for command 2 (UDP) to a
:class:`~vtwist.proxy.vmess.server_udp.VMessPacketSide`, for command 3 (Mux.Cool) to a
:class:`~vtwist.proxy.mux.server.MuxServer`. A bad header, a replay or a
clock out of the window is never answered: :mod:`vtwist.proxy.guard` holds the
connection, and one access line says why it was refused.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from enum import Enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.guard import GuardedServerProtocol, ProbeGuard, SilentReply
from vtwist.proxy.vmess.body import SEC_LEGACY, SEC_NONE, BodyError
from vtwist.proxy.vmess.handshake import Rejected, RequestParsed, ServerHandshake
from vtwist.proxy.vmess.header import (
    CMD_MUX,
    CMD_SWITCH_ACCOUNT,
    CMD_TCP,
    CMD_UDP,
    SwitchAccount,
    encode_switch_account,
)
from vtwist.proxy.vmess.replay import auth_id_filter, session_history
from vtwist.proxy.vmess.server_udp import VMessPacketSide
from vtwist.proxy.vmess.transport import VMessTransport
from vtwist.proxy.vmess.users import Account, UserTable
from vtwist.sansio import NEED_DATA, Clock
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.service import TunnelService

__all__ = ["ProbeGuard", "VMessServerFactory", "VMessServerProtocol", "VMessServerState"]

log = Logger(namespace="vtwist.vmess.inbound")

#: How often a listening inbound slides the legacy auth table (V2Ray refreshes every 10 s),
#: so a legacy header or a probe after a quiet spell finds it current instead of stalling
#: the reactor while up to 241 seconds of hashes are computed.
LEGACY_REFRESH = 10.0


class VMessServerState:
    """What all connections of one inbound share: users, replay filters, probe guard."""

    def __init__(self, accounts: list[Account], legacy: bool = True,
                 disable_insecure: bool = False, guard: ProbeGuard | None = None,
                 now: Clock = time.time, default_level: int = 0,
                 default_alter_id: int = 0) -> None:
        self.users = UserTable(accounts, legacy=legacy)
        self.default_level = default_level
        self.default_alter_id = default_alter_id
        #: accounts by lower-cased email, made up on demand for detours (4.34 userByEmail)
        self.by_email: dict[str, Account] = {a.email.lower(): a for a in accounts if a.email}
        if legacy and accounts:
            # Build the legacy hash table now rather than stall on the first legacy header.
            self.users.legacy_table.update(now())
        self.auth_filter = auth_id_filter()  # shared by the workers with --workers
        self.sessions = session_history()
        self.disable_insecure = disable_insecure
        self.guard = guard or ProbeGuard()

    def user_for_email(self, email: str) -> Account:
        """The account of ``email`` (any case), made up when new as V2Ray 4.34's
        ``GetUser`` does on a dynamic-port inbound: a random UUID, the ``default``
        alterId and level, added to the users this inbound accepts."""
        key = email.lower()
        account = self.by_email.get(key)
        if account is None:
            account = Account(uuid.uuid4().bytes, self.default_alter_id, self.default_level,
                              key)
            self.by_email[key] = account
            self.users.add(account)
        return account


class Phase(Enum):
    """Where one VMess connection is."""

    HANDSHAKE = "handshake"
    PROBE = "probe"
    STREAM = "stream"
    PACKETS = "packets"
    DONE = "done"


# (module names for the members: compared on every event)
_HANDSHAKE = Phase.HANDSHAKE
_PROBE = Phase.PROBE
_STREAM = Phase.STREAM
_PACKETS = Phase.PACKETS
_DONE = Phase.DONE


@implementer(IHalfCloseableProtocol)
class VMessServerProtocol(GuardedServerProtocol):
    """One inbound VMess connection."""

    protocolName = "vmess"

    def __init__(self, factory: VMessServerFactory) -> None:
        self.factory = factory
        self.phase = Phase.HANDSHAKE
        self.handshake: ServerHandshake | None = None
        self.request: RequestParsed | None = None
        self.inner: VMessTransport | None = None
        self.decoder: Any = None
        #: the StreamTunnel or VMessPacketSide the decoded body goes to
        self.side: Any = None
        self._timer: IDelayedCall | None = None

    @property
    def reactor(self) -> Any:
        """The factory's reactor (a Clock in tests)."""
        return self.factory.reactor

    def connectionMade(self) -> None:
        """Start the handshake deadline."""
        f = self.factory
        self.handshake = ServerHandshake(f.state.users, f.state.auth_filter, f.state.sessions)
        self.startHandshakeTimer(f.policy.level(0).handshake)

    def handshakeTimedOut(self) -> None:
        """No complete header in time: refused."""
        self._timer = None
        if self.phase is Phase.HANDSHAKE:
            self._refuse(f"no complete header within the handshake timeout "
                         f"({self.handshake.buffered} bytes)")  # type: ignore[union-attr]

    # -- input -------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Handshake, then body decoding; discarded when refused."""
        phase = self.phase
        if phase is _STREAM or phase is _PACKETS:
            self._body(data)
        elif phase is _HANDSHAKE:
            result = self.handshake.feed(data, self.factory.now())  # type: ignore[union-attr]
            if result is NEED_DATA:
                return
            self.handshake = None  # free the header buffer
            if isinstance(result, Rejected):
                self._refuse(result.reason)
            else:
                self._accept(result)  # type: ignore[arg-type]
        elif self.hold is not None:
            self.hold.discard(data)

    def _accept(self, r: RequestParsed) -> None:
        self.handshakeDone()
        self.request = r
        f = self.factory
        acct = r.account
        h = r.header
        if f.state.disable_insecure and h.security in (SEC_NONE, SEC_LEGACY):
            self._refuse(f"insecure encryption refused for user {acct.label}")
            return
        command = h.command
        f.accepted[(r.aead, h.security, command)] += 1
        self.decoder = r.body_decoder()
        offer = f.detour(acct) if f.detour is not None else None
        if offer is not None:
            header, encoder = r.response_writer(command=CMD_SWITCH_ACCOUNT,
                                                command_payload=encode_switch_account(offer))
        else:
            header, encoder = r.response_writer()
        self.inner = VMessTransport(self.transport, encoder, lambda: header)
        policy = f.policy.level(acct.level)
        email = acct.email or None
        if command == CMD_TCP:
            self.phase = _STREAM
            self.side = f.tunnels.openStream(
                self.inner, h.destination, SilentReply(self._close), inbound_tag=f.tag,
                source=self._peer(), email=email, policy=policy, sniff=f.sniffing)
        elif command == CMD_MUX:
            from vtwist.proxy.mux.server import MuxServer
            self.phase = _STREAM
            self.side = MuxServer(f.tunnels, self.inner, inbound_tag=f.tag, source=self._peer(),
                                  email=email, policy=policy, sniff=f.sniffing)
        elif command == CMD_UDP:
            self.phase = _PACKETS
            try:
                self.side = VMessPacketSide(f.tunnels, self.inner, r.destination, policy,
                                            self._close, inbound_tag=f.tag,
                                            source=self._peer(), email=email)
            except Exception as e:  # noqa: BLE001 - no outbound: close quietly
                log.info("vmess UDP {dest}: {why}", dest=r.destination, why=e)
                self._close()
                return
        if r.leftover and self.phase is not _DONE:
            self._body(r.leftover)

    def _body(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except BodyError as e:
            log.info("vmess from {peer}: {why}; closing", peer=self._peer(), why=e)
            self._close(abort=True)
            return
        if payloads:
            self.side.receivedSequence(payloads)
        if self.decoder.eof:
            self.side.eof()

    # -- refusals --------------------------------------------------------------------------
    def _refuse(self, reason: str) -> None:
        """Never answer: one access line, then the guard holds the connection."""
        self.rejectClient(reason)
        self.phase = Phase.PROBE
        self.holdConnection(self.factory.state.guard)

    # -- ending ----------------------------------------------------------------------------
    def _close(self, abort: bool = False) -> None:
        if self.phase is Phase.DONE:
            return
        side = self.side
        if self.phase is Phase.STREAM and side is not None and side.relay is not None \
                and not abort:
            side.close()  # the relay flushes both sides
            return
        self.phase = Phase.DONE
        self._cancelTimer()
        if side is not None:
            self.side = None
            side.lost(None)
        if self.inner is not None and not abort:
            self.inner.loseConnection()
        else:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client half-closed TCP: at a chunk boundary that ends the uplink."""
        if self.phase in (Phase.PROBE, Phase.HANDSHAKE, Phase.DONE):
            self.transport.loseConnection()
            return
        if self.decoder.at_boundary:
            if not self.decoder.eof:
                self.side.eof()
        else:
            self._close(abort=True)

    def writeConnectionLost(self) -> None:
        """Our FIN went out (probe mode)."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Release everything this connection held."""
        self.phase = Phase.DONE  # before cancelling: a cancelled connect is not a failure
        self._cancelTimer()
        self.releaseHold()
        if self.side is not None:
            side, self.side = self.side, None
            side.lost(reason)


class VMessServerFactory(InboundFactory):
    """Builds :class:`VMessServerProtocol`; one per inbound (all its ports share it)."""

    protocol = VMessServerProtocol  # type: ignore[assignment]

    def __init__(self, state: VMessServerState, tunnels: TunnelService,
                 policy: Policy = DEFAULT_POLICY, tag: str = "", now: Clock | None = None) -> None:
        super().__init__(tunnels, tag)
        self.state = state
        self.policy = policy
        self.now = now or time.time
        self.refused = 0
        #: accepted requests by (AEAD header?, security value, command)
        self.accepted: Counter[tuple[bool, int, int]] = Counter()
        self._refresh: LoopingCall | None = None
        #: ``detour(account) -> SwitchAccount | None``: the dynamic port offered in each
        #: response (``settings.detour``); None without a detour
        self.detour: Callable[[Account], SwitchAccount | None] | None = None

    @property
    def protocols(self) -> set[VMessServerProtocol]:
        """The live connections."""
        return set(self.connections)  # type: ignore[arg-type]

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
