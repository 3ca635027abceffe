"""The interfaces that join inbounds, the tunnel service, outbounds and networks.

Each is a zope interface so that tests can fake one side in one way and so that a new
protocol or network is one module plus one registry entry:

- :class:`IInbound`: a protocol name, its settings parser and its factory builder.
- :class:`IDispatcher`: picks the outbound for a destination (routing).
- :class:`IOutbound`: where traffic leaves; gives an ordinary stream endpoint per destination.
- :class:`IPacketSession`: a UDP association through an outbound.
- :class:`INetwork`: one entry of the network registry (tcp, kcp, ws, ...).
- :class:`IStreamLayer`: a layer (TLS, WebSocket, the HTTP disguise) that wraps endpoints.
- :class:`IInboundReply`: the inbound's own answer once the outbound is known.
"""

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
    same outbound can serve the tunnel service and any other Twisted client. The
    destination's network (tcp or udp) says what kind of stream it is.
    """

    tag = Attribute("The outbound's tag (str, may be empty)")

    def endpointFor(destination: object) -> object:
        """An IStreamClientEndpoint that reaches ``destination``."""

    def packetSession(onPacket: object, onClose: object) -> IPacketSession:
        """Open a UDP session; ``onPacket(data, source_destination)`` gets replies,
        ``onClose()`` is called once when the session ends on its own."""


class IDispatcher(Interface):
    """Chooses the outbound for each connection or UDP session (the router's front)."""

    log_access = Attribute("True when access lines are written")

    def choose(destination: object, inbound_tag: str = "", source: str = "",
               email: str = "", protocol: str = "") -> object:
        """The :class:`IOutbound` for ``destination`` now, or a Deferred firing with it
        when routing must resolve the domain first. Raises when there is no outbound.
        ``protocol``: what sniffing recognised (``http1``, ``tls``, ``bittorrent``), if any."""


class IInboundReply(Interface):
    """An inbound's own answer to its client once the tunnel knows the outcome.

    SOCKS writes its reply, HTTP its ``200 Connection established``; VMess writes nothing
    here (its response header rides the first downlink bytes).
    """

    wantsBound = Attribute(
        "Optional, true when absent: whether succeeded() uses the outbound's local address "
        "(asking for it is a getsockname call; a reply that ignores it says False).")

    def succeeded(bound: object) -> None:
        """The outbound connected; ``bound`` is its local address (an ``IAddress``)."""

    def failed(kind: object, reason: object) -> None:
        """The outbound could not be reached: ``kind`` is a
        :class:`vtwist.tunnel.failures.ConnectFailure`, ``reason`` the Failure. The reply
        answers the client and closes the inbound connection."""


class IInbound(Interface):
    """An inbound protocol: ``socks``, ``vmess``, ``http`` ...

    The config registry maps a protocol name to the module that provides this.
    """

    name = Attribute("The protocol name in V2Ray's JSON (str)")

    def parse_settings(node: object) -> object:
        """Validate ``settings`` (a :class:`vtwist.config.node.Node`) into plain data."""

    def build_factory(inbound: object, context: object) -> object:
        """An ``IProtocolFactory`` for one port of ``inbound`` (an InboundConfig);
        ``context`` carries the reactor, the tunnel service and the policy."""


class INetwork(Interface):
    """One network of the registry: everything vtwist knows about ``tcp``, ``kcp``, ``ws``..."""

    name = Attribute("The canonical name (str), as V2Ray's streamSettings.network")
    aliases = Attribute("Other names that select it (tuple of str)")
    settings_key = Attribute("Its key in streamSettings / transport, e.g. 'kcpSettings'")
    endpoint_prefix = Attribute("Its endpoint-string prefix (str), or None")
    endpoint_strings = Attribute("Its endpoint-string prefixes and their parsers (tuple)")
    server_alpn = Attribute("The ALPN a TLS server offers on it by default (tuple of str)")
    client_alpn = Attribute("The ALPN a TLS client offers on it by default (tuple of str)")
    link_fields = Attribute("What a share link's type/host/path mean for it (a "
                            "vtwist.transport.linkfields.LinkFields), or None")
    stream_layer = Attribute("Its layer above TLS (an IStreamLayer: ws, the HTTP disguise), "
                             "or None")

    def parse_settings(node: object, inbound: bool) -> object:
        """Validate its settings object into plain data."""

    def server_endpoint(reactor: object, listen: str, port: int, stream: object) -> object:
        """An ``IStreamServerEndpoint`` listening on ``listen:port`` for ``stream``.

        This is the base endpoint: :mod:`vtwist.transport.stack` puts TLS above it, then
        :meth:`wrap_server`."""

    def client_endpoint(reactor: object, host: str, port: int, stream: object) -> object:
        """An ``IStreamClientEndpoint`` reaching ``host:port`` for ``stream``.

        This is the base endpoint: :mod:`vtwist.transport.stack` puts TLS above it, then
        :meth:`wrap_client`."""

    def wrap_server(endpoint: object, stream: object) -> object:
        """The server ``endpoint`` (base, maybe with TLS) with the network's own layer."""

    def wrap_client(endpoint: object, host: str, port: int, stream: object) -> object:
        """The client ``endpoint`` (base, maybe with TLS) with the network's own layer."""


class IStreamLayer(Interface):
    """A layer that runs its own handshake and then carries a plain stream.

    TLS, WebSocket and the HTTP disguise are each one small object providing this;
    :mod:`vtwist.transport.stack` puts them above a network's base endpoint (TLS first, then
    the network's own). ``settings`` is the connection's
    :class:`vtwist.transport.settings.StreamSettings`: a layer that it does not ask for
    returns the endpoint unchanged.
    """

    name = Attribute("The layer's name (str), for log lines")

    def wrapServer(endpoint: object, settings: object) -> object:
        """Wrap an ``IStreamServerEndpoint``."""

    def wrapClient(endpoint: object, settings: object, host: str, port: int,
                   reactor: object = None) -> object:
        """Wrap an ``IStreamClientEndpoint`` that reaches ``host:port`` (the name TLS checks,
        the Host a WebSocket upgrade sends); ``reactor`` is the clock for its timers."""
