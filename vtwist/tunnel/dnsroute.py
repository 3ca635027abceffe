"""The internal DNS's queries through the router (V2Ray 4.34: plain-address and ``https://``
servers are reached through the outbound routing picks for the ``dns`` section's ``tag``).

:class:`RoutedNetwork` is the :class:`vtwist.dns.transports.Network` the resolver gets for
them; :func:`config_resolver` builds the one resolver a config uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IStreamClientEndpoint

from vtwist.address import Destination
from vtwist.dns.resolver import build_resolver


class _RoutedDatagram:
    def __init__(self, session: Any, destination: Destination) -> None:
        self.session, self.destination = session, destination

    def send(self, data: bytes) -> None:
        self.session.send(data, self.destination)

    def close(self) -> None:
        self.session.close()


class RoutedNetwork:
    """Queries leave through the outbound the dispatcher picks for ``tag`` (decided
    without resolving anything: the target is the server itself)."""

    def __init__(self, dispatcher: Callable[[], Any], tag: str) -> None:
        self.dispatcher, self.tag = dispatcher, tag

    def _outbound(self, destination: Destination) -> Any:
        outbound = self.dispatcher().outboundFor(destination, self.tag or None)
        own = getattr(outbound, "for_own_queries", None)  # the dns outbound must not
        return own() if own is not None else outbound      # answer them from this DNS

    def datagram(self, host: str, port: int, received: Callable[[bytes], None]) -> Any:
        """A UDP session through the routed outbound."""
        destination = Destination.udp(host, port)
        session = self._outbound(destination).packetSession(
            lambda data, source: received(data), lambda: None)
        return _RoutedDatagram(session, destination)

    def stream(self, host: str, port: int) -> IStreamClientEndpoint:
        """A stream through the routed outbound."""
        destination = Destination.tcp(host, port)
        return self._outbound(destination).endpointFor(destination)  # type: ignore[no-any-return]


def config_resolver(dns: Any, reactor: Any, dispatcher: Callable[[], Any],
                    trust_root: Any = None) -> Any:
    """The config's resolver: the ``dns`` section's (queries routed through
    ``dispatcher()``, called once the dispatcher exists), or the system's."""
    routed = RoutedNetwork(dispatcher, dns.tag) if dns is not None else None
    return build_resolver(dns, reactor, routed=routed, trust_root=trust_root)
