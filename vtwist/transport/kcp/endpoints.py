"""Twisted endpoints for mKCP: :class:`KCPServerEndpoint` and :class:`KCPClientEndpoint`.

Each client connection gets its own connected UDP socket and the next conv of a
process-wide counter (random start, +1 per dial), like V2Ray's dialer.  Endpoint strings:

* server: ``kcp:port=9000[:interface=127.0.0.1][:header=dtls][:seed=abc][:mtu=1350]
  [:tti=50][:uplink=5][:downlink=20][:congestion=1][:writeBuffer=2]``
* client: ``kcp:host=example.com:port=9000[:bindAddress=...][:linger=8][:handshake=4]
  [:...same options]`` (``handshake=0``: no deadline for the server's first answer)

``seed=`` with an empty value selects AES-GCM with the empty seed; leave ``seed`` out for
the simple authenticator.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import address, defer, error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from zope.interface import implementer

from vtwist.dns.system import SystemResolver
from vtwist.transport.reuseport import listen_udp

from .config import KCPConfig, buffer_bytes
from .protocol import DEFAULT_HANDSHAKE, KCPClientProtocol, KCPListener, KCPListeningPort

_conv_counter = random.getrandbits(16)


def next_conv() -> int:
    """The next conversation id of this process (16 bits)."""
    global _conv_counter
    _conv_counter = (_conv_counter + 1) & 0xFFFFFFFF
    return _conv_counter & 0xFFFF


@implementer(IStreamServerEndpoint)
class KCPServerEndpoint:
    """Listen for mKCP sessions on one UDP port."""

    def __init__(self, reactor: Any, port: int, interface: str = "",
                 config: KCPConfig | None = None) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface or ""
        self.config = config or KCPConfig()

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred:
        """Start listening; fires with an IListeningPort."""
        listener = KCPListener(self.config, protocolFactory, self.reactor)
        try:
            udp = listen_udp(self.reactor, self.port, listener, interface=self.interface,
                             maxPacketSize=65536)
        except error.CannotListenError:
            return defer.fail()
        return defer.succeed(KCPListeningPort(udp, listener))


@implementer(IStreamClientEndpoint)
class KCPClientEndpoint:
    """Dial an mKCP server; every connection uses its own UDP socket.

    ``linger`` is how long a closed session keeps repeating TERMINATE (V2Ray: 8 s) before
    its socket is closed. ``handshake``: a server that sends nothing within that many
    seconds of the first datagram fails the connection (None: wait as long as mKCP does);
    an ICMP port unreachable before any answer fails it at once as refused.
    """

    def __init__(self, reactor: Any, host: str, port: int,
                 config: KCPConfig | None = None, bindAddress: str | None = None,
                 linger: float = 8.0, handshake: float | None = DEFAULT_HANDSHAKE) -> None:
        self.reactor = reactor
        self.linger = linger
        self.handshake = handshake
        self.host = host
        self.port = port
        self.config = config or KCPConfig()
        self.bindAddress = bindAddress

    async def _resolve(self) -> str:
        host = self.host
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if isIPAddress(host) or isIPv6Address(host):
            return host
        ips = await SystemResolver(self.reactor).resolve(host)  # the one resolver interface
        return ips[0]  # type: ignore[no-any-return]

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred:
        """Open the socket, start the session; fires with the application protocol."""
        return defer.ensureDeferred(self._connect(protocolFactory))

    async def _connect(self, factory: IProtocolFactory) -> Any:
        try:
            ip = await self._resolve()
        except Exception as e:
            raise error.DNSLookupError(f"{self.host}: {e}") from e
        v6 = ":" in ip
        interface = self.bindAddress or ("::" if v6 else "")
        proto = KCPClientProtocol(self.config, next_conv(), (ip, self.port), self.reactor,
                                  self.linger, self.handshake)
        try:
            udp = self.reactor.listenUDP(0, proto, interface=interface, maxPacketSize=65536)
        except error.CannotListenError as e:
            raise error.ConnectError(string=str(e)) from e
        proto.port = udp
        if v6:
            peer: Any = address.IPv6Address("UDP", ip, self.port)
        else:
            peer = address.IPv4Address("UDP", ip, self.port)
        try:
            app = factory.buildProtocol(peer)
            if app is None:
                raise error.ConnectionRefusedError("factory returned no protocol")
        except BaseException:
            udp.stopListening()
            raise
        proto.start(app)
        return app


_FLAG_TRUE = ("1", "true", "yes", "on")


def config_from_kwargs(kwargs: dict[str, str]) -> KCPConfig:
    """KCPConfig from endpoint-string options (names as in kcpSettings, short forms too)."""
    opts = {k.lower(): v for k, v in kwargs.items()}

    def num(*names: str, default: int) -> int:
        for n in names:
            if n.lower() in opts:
                return int(opts.pop(n.lower()))
        return default

    cfg = dict(
        mtu=num("mtu", default=1350),
        tti=num("tti", default=50),
        uplink_capacity=num("uplink", "uplinkCapacity", default=5),
        downlink_capacity=num("downlink", "downlinkCapacity", default=20),
        read_buffer_bytes=buffer_bytes(num("readBuffer", "readBufferSize", default=2)),
        write_buffer_bytes=buffer_bytes(num("writeBuffer", "writeBufferSize", default=2)),
    )
    congestion = opts.pop("congestion", "0").lower() in _FLAG_TRUE
    header = opts.pop("header", "none").lower()
    seed = opts.pop("seed", None)
    if opts:
        raise ValueError(f"unknown kcp endpoint options: {', '.join(sorted(opts))}")
    return KCPConfig(congestion=congestion, header_type=header, seed=seed, **cfg)


def server_from_string(reactor: Any, port: str | None = None, interface: str = "",
                       **kwargs: str) -> KCPServerEndpoint:
    """Build a server endpoint from ``serverFromString`` arguments."""
    if port is None:
        raise ValueError("kcp server endpoint needs port=")
    return KCPServerEndpoint(reactor, int(port), interface, config_from_kwargs(kwargs))


def client_from_string(reactor: Any, host: str | None = None, port: str | None = None,
                       bindAddress: str | None = None, linger: str = "8",
                       handshake: str = str(DEFAULT_HANDSHAKE),
                       **kwargs: str) -> KCPClientEndpoint:
    """Build a client endpoint from ``clientFromString`` arguments."""
    if host is None or port is None:
        raise ValueError("kcp client endpoint needs host= and port=")
    wait = float(handshake)
    return KCPClientEndpoint(reactor, host, int(port), config_from_kwargs(kwargs), bindAddress,
                             float(linger), wait if wait > 0 else None)
