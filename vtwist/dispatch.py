"""The dispatcher: picks the outbound for a destination and connects to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.relay import RelayProtocol, RelayProtocolFactory

access_log = Logger(namespace="vtwist.access")


class NoOutbound(Exception):
    """The configuration has no outbound for this traffic."""


class Dispatcher:
    """Chooses an outbound for each destination (first outbound by default) and connects.

    Routing rules will plug in here: :meth:`outboundFor` is the one place that decides.
    """

    def __init__(self, outbounds: Sequence[IOutbound], default_tag: str | None = None) -> None:
        self.outbounds = list(outbounds)
        self.by_tag = {o.tag: o for o in self.outbounds if o.tag}
        self.default = self.by_tag[default_tag] if default_tag else (
            self.outbounds[0] if self.outbounds else None)

    def outboundFor(self, destination: Destination, inbound_tag: str | None = None) -> IOutbound:
        """The outbound that carries traffic to ``destination`` from ``inbound_tag``."""
        if self.default is None:
            raise NoOutbound("no outbound configured")
        return self.default

    def connect(self, destination: Destination, *, inbound_tag: str | None = None,
                source: str = "", email: str | None = None) -> Deferred[RelayProtocol]:
        """Connect to ``destination``; fires with a paused, unattached :class:`RelayProtocol`.

        Logs a V2Ray-style access line.
        """
        try:
            outbound = self.outboundFor(destination, inbound_tag)
        except NoOutbound as e:
            return _failed(e)
        self.logAccess(source, destination, inbound_tag, outbound, email)
        try:
            endpoint = outbound.endpointFor(destination)
        except Exception as e:  # noqa: BLE001 - becomes the caller's errback
            return _failed(e)
        return endpoint.connect(RelayProtocolFactory())

    def packetSession(self, destination: Destination, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None], *, inbound_tag: str | None = None,
                      source: str = "", email: str | None = None) -> IPacketSession:
        """Open a UDP session for traffic whose first packet goes to ``destination``."""
        outbound = self.outboundFor(destination, inbound_tag)
        self.logAccess(source, destination, inbound_tag, outbound, email)
        return outbound.packetSession(onPacket, onClose)

    @staticmethod
    def logAccess(source: str, destination: Destination, inbound_tag: str | None,
                  outbound: IOutbound, email: str | None = None) -> None:
        """``from 127.0.0.1:50000 accepted tcp:example.com:443 [socks-in >> direct]``."""
        line = f"from {source} accepted {destination} [{inbound_tag or ''} >> {outbound.tag or ''}]"
        if email:
            line += f" email: {email}"
        access_log.info("{line}", line=line)


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d
