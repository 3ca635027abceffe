"""What every inbound shares: the context its factory is built with (:class:`BuildContext`)
and the factory base that tracks live connections (:class:`InboundFactory`)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.protocol import Factory, Protocol

from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.tunnel.dialer import Dialer, chained_dialer, direct_dialer
from vtwist.tunnel.handshakes import HandshakeLimit
from vtwist.tunnel.service import TunnelService


class InboundFactory(Factory):
    """Builds an inbound's protocols and keeps track of the live ones.

    ``connections`` holds every protocol built and not yet garbage; :meth:`closeAll` closes
    them (the inbound's service stops). Subclasses set ``protocol`` or override
    :meth:`buildProtocol` and call :meth:`track`.
    """

    noisy = False

    def __init__(self, tunnels: TunnelService, tag: str = "") -> None:
        self.tunnels = tunnels
        self.reactor: Any = tunnels.clock
        self.tag = tag
        #: the protocols whose sniffed domain replaces the destination (``destOverride``)
        self.sniffing: tuple[str, ...] = ()
        self.connections: weakref.WeakSet[Protocol] = weakref.WeakSet()
        #: the connections still in their handshake, capped (``policy.system.maxHandshakes``)
        self.handshakes = HandshakeLimit(clock=self.reactor, name=tag or "inbound")

    def track(self, protocol: Protocol) -> Protocol:
        """Remember ``protocol`` as live."""
        self.connections.add(protocol)
        return protocol

    def buildProtocol(self, addr: Any) -> Protocol | None:
        """Build (with ``self.protocol(self)``) and track one connection's protocol."""
        return self.track(self.protocol(self))  # type: ignore[call-arg]

    def closeAll(self) -> None:
        """Close every live connection of this inbound."""
        for protocol in list(self.connections):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.loseConnection()


@dataclass
class BuildContext:
    """What protocol builders get: the reactor, the tunnel service, the policy, the
    outbounds built so far (by tag) and each outbound's :meth:`dialer`; ``inbounds`` maps
    inbound tags to what their services register there (a dynamic-port inbound's
    allocator, which a VMess ``detour`` asks for a port and an account)."""

    reactor: Any
    tunnels: TunnelService | None = None
    policy: Policy = DEFAULT_POLICY
    outbounds: dict[str, Any] = field(default_factory=dict)
    inbounds: dict[str, Any] = field(default_factory=dict)
    #: the app's stats/API/metrics wiring (vtwist.app.api.setup.Operations), if any
    operations: Any = None
    #: the config's resolver (vtwist.dns: the system's, or the ``dns`` section's); None:
    #: each part uses the system resolver
    resolver: Any = None

    def dialer(self, outbound: Any) -> Dialer:
        """How ``outbound`` (an OutboundConfig) reaches its server: through the outbound
        its ``proxy_tag`` names (built first, see ``build_outbounds``), else directly over
        its streamSettings."""
        if getattr(outbound, "proxy_tag", ""):
            return chained_dialer(self.reactor, self.outbounds[outbound.proxy_tag],
                                  outbound.stream)
        return direct_dialer(self.reactor, outbound.stream, self.resolver)
