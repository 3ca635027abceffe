"""What every inbound shares: the context its factory is built with (:class:`BuildContext`)
and the factory base that tracks live connections (:class:`InboundFactory`)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from twisted.internet.protocol import Factory, Protocol

from vtwist.policy import DEFAULT_POLICY, Policy
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
    """What protocol builders get: the reactor, the tunnel service and the policy."""

    reactor: Any
    tunnels: TunnelService | None = None
    policy: Policy = DEFAULT_POLICY
