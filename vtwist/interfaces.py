"""The interfaces that join inbounds, the dispatcher and outbounds."""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IPacketSession(Interface):
    """A UDP association through an outbound: datagrams keep their boundaries."""

    def send(data: bytes, destination: object) -> None:
        """Send one datagram to a :class:`vtwist.address.Destination`."""

    def close() -> None:
        """End the session and free its sockets and timers."""


class IOutbound(Interface):
    """Where traffic leaves: freedom, blackhole, vmess ...

    ``endpointFor`` gives an ordinary ``IStreamClientEndpoint`` to the destination, so the
    same outbound can serve the relay and any other Twisted client.
    """

    tag = Attribute("The outbound's tag (str, may be empty)")

    def endpointFor(destination: object) -> object:
        """An IStreamClientEndpoint that reaches the TCP ``destination``."""

    def packetSession(onPacket: object, onClose: object) -> IPacketSession:
        """Open a UDP session; ``onPacket(data, source_destination)`` gets replies,
        ``onClose()`` is called once when the session ends on its own."""
