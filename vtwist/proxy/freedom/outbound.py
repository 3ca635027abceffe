"""The ``freedom`` outbound at run time: connect straight to the destination.

With ``proxySettings`` "straight" means through the proxy outbound, as V2Ray 4.34's freedom
dials through its handler's ``Dial``: redirect and domainStrategy apply first, then streams
go through the proxy's ``endpointFor`` (TLS of streamSettings on top, as the chained dialer
has it) and datagrams through its ``packetSession``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import CannotListenError, DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, parse_ip
from vtwist.dns.endpoint import ResolvingEndpoint
from vtwist.dns.system import ANY, V4, V6, SystemResolver
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.proxy.freedom.settings import FreedomSettings
from vtwist.transport.tcp.endpoints import tcp_client_endpoint
from vtwist.tunnel.dialer import packet_path
from vtwist.tunnel.packets import PacketQueue

log = Logger(namespace="vtwist.freedom")

#: domainStrategy -> the address family asked of the resolver
FAMILIES = {"AsIs": ANY, "UseIP": ANY, "UseIPv4": V4, "UseIPv6": V6}


async def resolve(resolver: Any, host: str, strategy: str) -> str:
    """Resolve ``host`` to one IP address following a domainStrategy (not AsIs) with
    ``resolver`` (vtwist.dns: the system's, or the config's ``dns`` section)."""
    ips = await resolver.resolve(host, FAMILIES.get(strategy, ANY))
    if not ips:
        raise DNSLookupError(host)
    return ips[0]  # type: ignore[no-any-return]


class _UDPSocket(DatagramProtocol):
    def __init__(self, session: FreedomPacketSession) -> None:
        self.session = session

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.session.onPacket(data, Destination.udp(addr[0], addr[1]))


@implementer(IPacketSession)
class FreedomPacketSession:
    """UDP straight out: one socket per address family, opened on first use."""

    def __init__(self, outbound: FreedomOutbound, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None]) -> None:
        self.outbound = outbound
        self.onPacket = onPacket
        self.onClose = onClose
        self._ports: dict[int, Any] = {}
        self._resolved: dict[str, str] = {}
        self._resolving: dict[str, PacketQueue] = {}
        self.closed = False
        #: the proxy outbound's IPacketSession (proxySettings), else None
        self.upstream: Any = None
        if outbound.via is not None:
            upstream = outbound.via.packetSession(onPacket, self._upstreamClosed)
            if self.closed:
                upstream.close()
            else:
                self.upstream = upstream

    def _upstreamClosed(self) -> None:
        self.upstream = None
        if not self.closed:
            self.close()
            self.onClose()

    def _port(self, family: int) -> Any:
        port = self._ports.get(family)
        if port is None:
            interface = "::" if family == 6 else "0.0.0.0"
            port = self.outbound.reactor.listenUDP(0, _UDPSocket(self), interface=interface,
                                                   maxPacketSize=65535)
            self._ports[family] = port
        return port

    def send(self, data: bytes, destination: Destination) -> None:
        """Send one datagram; domains are resolved (and remembered) first."""
        if self.closed:
            return
        destination = self.outbound.redirected(destination)
        ip = parse_ip(destination.host)
        strategy = self.outbound.settings.domain_strategy
        if self.upstream is not None and (ip is not None or strategy == "AsIs"):
            self.upstream.send(data, destination)  # the proxy resolves a name itself
            return
        if ip is not None:
            self._sendTo(data, str(ip), destination.port)
            return
        host = destination.host
        known = self._resolved.get(host)
        if known is not None:
            self._sendTo(data, known, destination.port)
            return
        waiting = self._resolving.get(host)
        if waiting is not None:  # one lookup per name: later datagrams wait for it
            waiting.push((data, destination.port))
            return
        waiting = self._resolving[host] = PacketQueue()
        waiting.push((data, destination.port))
        resolver = self.outbound.system if strategy == "AsIs" else self.outbound.resolver
        d = defer.Deferred.fromCoroutine(resolve(resolver, host, strategy))

        def resolved(address: str) -> None:
            self._resolved[host] = address
            waiting = self._resolving.pop(host, None)
            for payload, port in waiting.take() if waiting is not None else ():
                self._sendTo(payload, address, port)

        def failed(failure: Failure) -> None:
            self._resolving.pop(host, None)
            log.info("UDP to {dest}: cannot resolve: {why}", dest=destination,
                     why=failure.getErrorMessage())

        d.addCallbacks(resolved, failed)

    def _sendTo(self, data: bytes, ip: str, port: int) -> None:
        if self.closed:
            return
        if self.upstream is not None:
            self.upstream.send(data, Destination.udp(ip, port))
            return
        family = 6 if ":" in ip else 4
        try:
            self._port(family).write(data, (ip, port))
        except (OSError, CannotListenError) as e:  # e.g. no IPv6 on this machine
            log.info("UDP to {ip}:{port} failed: {e}", ip=ip, port=port, e=e)

    def close(self) -> None:
        """Close the sockets."""
        if self.closed:
            return
        self.closed = True
        self._resolving.clear()
        for port in self._ports.values():
            port.stopListening()
        self._ports.clear()
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            upstream.close()


@implementer(IOutbound)
class FreedomOutbound:
    """Direct connections, honouring domainStrategy and redirect."""

    def __init__(self, reactor: Any, tag: str = "", settings: FreedomSettings | None = None,
                 connect_timeout: float = 30, resolver: Any = None,
                 dialer: Callable[[str, int], Any] | None = None) -> None:
        self.reactor = reactor
        #: the chained dialer (proxySettings), else None: connect straight out
        self.dialer = dialer if packet_path(dialer) is not None else None
        #: the proxy outbound datagrams go through (proxySettings), else None
        self.via = packet_path(dialer)
        #: UseIP*: the config's resolver; AsIs names: the system's (as V2Ray 4.34)
        self.resolver = resolver if resolver is not None else SystemResolver(reactor)
        self.system = SystemResolver(reactor)
        self.tag = tag
        self.settings = settings or FreedomSettings()
        self.connect_timeout = connect_timeout

    def redirected(self, destination: Destination) -> Destination:
        """Apply ``redirect`` (an empty host or port 0 keeps the original part)."""
        if self.settings.redirect is None:
            return destination
        host, port = self.settings.redirect
        return Destination(destination.network, host or destination.host,
                           port or destination.port)

    def endpointFor(self, destination: Destination) -> IStreamClientEndpoint:
        """An endpoint to ``destination`` (TCP)."""
        destination = self.redirected(destination)
        strategy = self.settings.domain_strategy
        resolver = self.system if strategy == "AsIs" else self.resolver
        dialer = self.dialer
        if dialer is not None and (strategy == "AsIs" or not destination.is_domain):
            return dialer(destination.host, destination.port)  # type: ignore[no-any-return]
        if not destination.is_domain:
            return tcp_client_endpoint(self.reactor, destination.host, destination.port,
                                       self.connect_timeout)
        port, timeout = destination.port, self.connect_timeout
        if dialer is not None:
            def connect(ip: str) -> Any:
                return dialer(ip, port)
        else:
            def connect(ip: str) -> Any:
                return tcp_client_endpoint(self.reactor, ip, port, timeout)
        return ResolvingEndpoint(resolver, destination.host, connect, FAMILIES[strategy],
                                 clock=self.reactor)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> FreedomPacketSession:
        """A UDP session sending straight out."""
        return FreedomPacketSession(self, onPacket, onClose)


def build_outbound(outbound: Any, ctx: Any) -> FreedomOutbound:
    """The registry's builder: a FreedomOutbound from its config."""
    dialer = ctx.dialer(outbound) if getattr(outbound, "proxy_tag", "") else None
    return FreedomOutbound(ctx.reactor, outbound.tag, outbound.settings,
                           resolver=ctx.resolver, dialer=dialer)
