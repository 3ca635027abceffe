"""Listening sockets shared by several worker processes through ``SO_REUSEPORT``.

In ``--workers N`` mode (:mod:`vtwist.app.workers`) every worker binds the same TCP and UDP
ports with ``SO_REUSEPORT``; the kernel then spreads new TCP connections over the workers and
hashes each UDP datagram by its 4-tuple, so all datagrams of one peer address (one mKCP
session: the client uses one UDP socket per session) reach the same worker.

The switch is process-wide: :func:`enable` is called once by a worker before its service is
built; everywhere else (one process, tests, embedding) the listeners are Twisted's own.
The sockets are created here and handed to the reactor with ``adoptStreamPort`` /
``adoptDatagramPort``.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from twisted.internet import defer, error
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

_enabled = False
#: the listen backlog of a shared TCP port (as vtwist's own listeners: Go's listeners take
#: the kernel's somaxconn, Twisted's default of 50 is small for connection bursts)
BACKLOG = 1024


def enable(on: bool = True) -> None:
    """Bind every later listener with ``SO_REUSEPORT`` (a worker process calls this)."""
    global _enabled
    _enabled = on


def enabled() -> bool:
    """True in a worker process: listeners share their ports with the other workers."""
    return _enabled


def _family(interface: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(interface).version == 6 \
            else socket.AF_INET
    except ValueError:
        return socket.AF_INET


def bound_socket(kind: socket.SocketKind, port: int, interface: str = "",
                 backlog: int = BACKLOG) -> socket.socket:
    """A non-blocking socket bound to ``interface:port`` with ``SO_REUSEPORT`` (and
    listening, for TCP). Raises :class:`twisted.internet.error.CannotListenError`."""
    family = _family(interface)
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and interface in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((interface or ("::" if family == socket.AF_INET6 else ""), port))
        if kind == socket.SOCK_STREAM:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise error.CannotListenError(interface, port, e) from None
    return sock


def listen_tcp(reactor: Any, port: int, factory: IProtocolFactory, interface: str = "",
               backlog: int = BACKLOG) -> Any:
    """An ``IListeningPort`` for TCP on ``interface:port`` shared through SO_REUSEPORT."""
    sock = bound_socket(socket.SOCK_STREAM, port, interface, backlog)
    try:
        return reactor.adoptStreamPort(sock.fileno(), sock.family, factory)
    finally:
        sock.close()  # the reactor holds its own duplicate


def listen_udp(reactor: Any, port: int, protocol: Any, interface: str = "",
               maxPacketSize: int = 8192) -> Any:  # noqa: N803 - Twisted's name
    """``reactor.listenUDP``, or, in a worker, the same port shared through SO_REUSEPORT."""
    if not _enabled or port == 0:
        return reactor.listenUDP(port, protocol, interface=interface,
                                 maxPacketSize=maxPacketSize)
    sock = bound_socket(socket.SOCK_DGRAM, port, interface)
    try:
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol,
                                         maxPacketSize=maxPacketSize)
    finally:
        sock.close()


@implementer(IStreamServerEndpoint)
class ReusePortTCPServerEndpoint:
    """A TCP server endpoint whose port other workers bind too (``SO_REUSEPORT``)."""

    def __init__(self, reactor: Any, port: int, interface: str = "", backlog: int = BACKLOG) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[Any]:  # noqa: N803
        """Bind, listen and adopt the socket; fires with the ``IListeningPort``."""
        return defer.execute(listen_tcp, self.reactor, self.port, protocolFactory,
                             self.interface, self.backlog)


def tcp_server_endpoint(reactor: Any, port: int, interface: str) -> IStreamServerEndpoint:
    """Twisted's TCP server endpoint, or in a worker the SO_REUSEPORT one."""
    if _enabled and port != 0:
        return ReusePortTCPServerEndpoint(reactor, port, interface)
    if ":" in interface:
        return TCP6ServerEndpoint(reactor, port, interface=interface)
    return TCP4ServerEndpoint(reactor, port, interface=interface)
