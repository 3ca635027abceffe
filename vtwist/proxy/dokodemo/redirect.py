"""Linux transparent-proxy socket options for dokodemo-door's ``followRedirect``.

- iptables ``REDIRECT`` (``sockopt.tproxy`` "redirect", or unset): the accepted TCP socket's
  original destination, ``getsockopt(SOL_IP, SO_ORIGINAL_DST)`` (IPv4) or
  ``getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)`` (IPv6).
- ``TPROXY`` (``sockopt.tproxy`` "tproxy"): listening sockets with ``IP_TRANSPARENT``; a TCP
  connection's original destination is its local address, a UDP datagram's comes in the
  ``IP_ORIGDSTADDR`` ancillary data (``IP_RECVORIGDSTADDR``), and replies leave from a
  transparent socket bound to that original destination.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

from twisted.internet import defer, tcp, udp
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import normalize_host

log = Logger(namespace="vtwist.dokodemo")

SOL_IP = getattr(socket, "SOL_IP", 0)
SOL_IPV6 = getattr(socket, "SOL_IPV6", 41)
#: linux/netfilter_ipv4.h and linux/netfilter_ipv6/ip6_tables.h: both 80.
SO_ORIGINAL_DST = 80
IP6T_SO_ORIGINAL_DST = 80
IP_TRANSPARENT = getattr(socket, "IP_TRANSPARENT", 19)
IPV6_TRANSPARENT = 75
IP_RECVORIGDSTADDR = 20  # == IP_ORIGDSTADDR, the ancillary message type
IPV6_RECVORIGDSTADDR = 74  # == IPV6_ORIGDSTADDR
SO_MARK = getattr(socket, "SO_MARK", 36)
_SOCKADDR_SIZE = 28  # sockaddr_in6, the larger of the two
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


def parse_sockaddr(raw: bytes) -> tuple[str, int] | None:
    """``(ip, port)`` of a raw ``sockaddr_in`` / ``sockaddr_in6``; None if it is neither."""
    if len(raw) < 8:
        return None
    family = struct.unpack_from("=H", raw)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    if family == socket.AF_INET6 and len(raw) >= 24:
        return _unmap(socket.inet_ntop(socket.AF_INET6, raw[8:24])), port
    return None


def _unmap(host: str) -> str:
    """``::ffff:1.2.3.4`` -> ``1.2.3.4``."""
    return host[7:] if host.lower().startswith("::ffff:") and "." in host else host


def socket_of(transport: Any) -> socket.socket | None:
    """The OS socket under ``transport`` (through wrapping transports), or None."""
    for _ in range(8):
        if transport is None:
            return None
        handle = getattr(transport, "getHandle", lambda: None)()
        if isinstance(handle, socket.socket):
            return handle
        transport = getattr(transport, "transport", None)
    return None


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """Where a connection that iptables ``REDIRECT`` sent here was going, or None (no NAT
    entry, not Linux, not an IP socket, or not redirected at all).

    Connection tracking also answers for a connection made straight to this socket's
    address (no rule rewrote it): with that very address. Following it would connect
    the door to itself, and that connection to itself again, without end; such a
    connection has no original destination."""
    attempts = [(SOL_IP, SO_ORIGINAL_DST)]
    if sock.family == socket.AF_INET6:
        attempts.insert(0, (SOL_IPV6, IP6T_SO_ORIGINAL_DST))
    for level, option in attempts:
        try:
            raw = sock.getsockopt(level, option, _SOCKADDR_SIZE)
        except OSError:
            continue
        found = parse_sockaddr(raw)
        if found is not None:
            return None if _is_local_address(sock, found) else found
    return None


def is_own_address(host: str) -> bool:
    """Whether ``host`` is an address of this machine (a socket can bind to it without
    ``IP_TRANSPARENT``)."""
    host = normalize_host(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


def _is_local_address(sock: socket.socket, address: tuple[str, int]) -> bool:
    """Whether ``address`` is ``sock``'s own local address (IPv4-mapped forms alike)."""
    try:
        local = sock.getsockname()
    except OSError:
        return False
    return local[1] == address[1] and normalize_host(local[0]) == normalize_host(address[0])


def set_transparent(sock: socket.socket, *, recv_orig_dst: bool = False,
                    mark: int = 0) -> None:
    """``IP_TRANSPARENT`` (and ``IPV6_TRANSPARENT``) on ``sock``; with ``recv_orig_dst`` the
    original destination of each datagram comes as ancillary data. Raises OSError (needs
    CAP_NET_ADMIN)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
        if recv_orig_dst:
            sock.setsockopt(SOL_IPV6, IPV6_RECVORIGDSTADDR, 1)
    try:
        sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)
        if recv_orig_dst:
            sock.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
    except OSError:
        if sock.family != socket.AF_INET6:
            raise
    if mark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)


def original_from_ancillary(ancdata: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    """The ``IP_ORIGDSTADDR`` / ``IPV6_ORIGDSTADDR`` address in ``recvmsg`` ancillary data."""
    for level, kind, data in ancdata:
        if (level, kind) in ((SOL_IP, IP_RECVORIGDSTADDR), (SOL_IPV6, IPV6_RECVORIGDSTADDR)):
            return parse_sockaddr(data)
    return None


# -- listening ports ---------------------------------------------------------------------------
class TransparentTCPPort(tcp.Port):
    """A TCP listening port whose socket has ``IP_TRANSPARENT`` (TPROXY)."""

    mark = 0

    def createInternetSocket(self) -> socket.socket:
        """The socket, transparent before it binds."""
        sock = super().createInternetSocket()
        set_transparent(sock, mark=self.mark)
        return sock


@implementer(IStreamServerEndpoint)
class TransparentTCPServerEndpoint:
    """Listens with a :class:`TransparentTCPPort` on ``interface:port``."""

    def __init__(self, reactor: Any, port: int, interface: str = "", mark: int = 0,
                 backlog: int = 50) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.mark = mark
        self.backlog = backlog

    def listen(self, factory: Any) -> defer.Deferred[IListeningPort]:
        """Start listening; fails with CannotListenError (or OSError without the right)."""
        def start() -> IListeningPort:
            port = TransparentTCPPort(self.port, factory, self.backlog, self.interface,
                                      self.reactor)
            port.mark = self.mark
            port.startListening()
            return port

        return defer.execute(start)


class TransparentUDPPort(udp.Port):
    """A UDP port with ``IP_TRANSPARENT`` and ``IP_RECVORIGDSTADDR``: each datagram goes to
    ``protocol.datagramReceivedTo(data, addr, original)`` with its original destination."""

    mark = 0

    def createInternetSocket(self) -> socket.socket:
        """The socket, transparent and asking for original destinations before it binds."""
        sock = super().createInternetSocket()
        set_transparent(sock, recv_orig_dst=True, mark=self.mark)
        return sock

    def doRead(self) -> None:
        """Read what is waiting with ``recvmsg`` (Twisted's reads use ``recvfrom``)."""
        read = 0
        space = socket.CMSG_SPACE(_SOCKADDR_SIZE)
        while read < self.maxThroughput:
            try:
                data, ancdata, _flags, addr = self.socket.recvmsg(self.maxPacketSize, space)
            except OSError as e:
                if e.errno in _AGAIN or e.errno == errno.ECONNREFUSED:
                    return
                raise
            read += len(data)
            try:
                self.protocol.datagramReceivedTo(
                    data, (_unmap(addr[0]), addr[1]), original_from_ancillary(ancdata))
            except BaseException:
                log.failure("dokodemo-door: a datagram could not be handled")


def listen_transparent_udp(reactor: Any, port: int, protocol: Any, interface: str = "",
                           mark: int = 0, max_packet: int = 65535) -> TransparentUDPPort:
    """Start a :class:`TransparentUDPPort` for ``protocol``."""
    listening = TransparentUDPPort(port, protocol, interface, max_packet, reactor)
    listening.mark = mark
    listening.startListening()
    return listening


def reply_socket(source: tuple[str, int], mark: int = 0) -> socket.socket:
    """A non-blocking transparent UDP socket bound to ``source`` (a TPROXY flow's original
    destination), so replies reach the client from the address it sent to."""
    family = socket.AF_INET6 if ":" in source[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        set_transparent(sock, mark=mark)
        sock.bind(source)
    except OSError:
        sock.close()
        raise
    return sock
