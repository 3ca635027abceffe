"""Listening sockets shared by several worker processes through ``SO_REUSEPORT``.

In ``--workers N`` mode (:mod:`vtwist.app.workers`) every worker binds the same TCP and UDP
ports with ``SO_REUSEPORT``; the kernel then spreads new TCP connections over the workers and
hashes each UDP datagram by its 4-tuple, so all datagrams of one peer address (one mKCP
session: the client uses one UDP socket per session) reach the same worker. A worker's UDP
sockets come from the supervisor where it gives them (:mod:`vtwist.app.udpslots`): it keeps
them when a worker dies, so the group, and with it every other worker's flows, stays put.

The switch is process-wide: :func:`enable` is called once by a worker before its service is
built; everywhere else (one process, tests, embedding) the listeners are the usual ones.
A TCP port is vtwist's :class:`~vtwist.transport.internals.AcceptBackoffPort` with
``SO_REUSEPORT`` set on its socket; a UDP socket is created here and handed to the reactor
with ``adoptDatagramPort``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from vtwist.transport.internals import AcceptBackoffPort
from vtwist.transport.tcp.listen import BACKLOG, TCPServerEndpoint

_enabled = False
#: where a worker gets its UDP sockets from (:func:`vtwist.app.udpslots.held_socket`): a
#: socket bound by the supervisor, which it keeps when the worker dies, or None
_held_udp: Callable[[str, int], socket.socket | None] | None = None


def enable(on: bool = True,
           held_udp: Callable[[str, int], socket.socket | None] | None = None) -> None:
    """Bind every later listener with ``SO_REUSEPORT`` (a worker process calls this);
    ``held_udp(interface, port)`` gives the UDP sockets, where it has one."""
    global _enabled, _held_udp
    _enabled = on
    _held_udp = held_udp if on else None


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


def listen_udp(reactor: Any, port: int, protocol: Any, interface: str = "",
               maxPacketSize: int = 8192) -> Any:  # noqa: N803 - Twisted's name
    """``reactor.listenUDP``, or, in a worker, the same port shared through SO_REUSEPORT (the
    supervisor's socket for this worker where it gives one, so a worker's restart moves no
    other worker's flows)."""
    if not _enabled or port == 0:
        return reactor.listenUDP(port, protocol, interface=interface,
                                 maxPacketSize=maxPacketSize)
    held = _held_udp(interface, port) if _held_udp is not None else None
    sock = held if held is not None else bound_socket(socket.SOCK_DGRAM, port, interface)
    try:
        return reactor.adoptDatagramPort(sock.fileno(), sock.family, protocol,
                                         maxPacketSize=maxPacketSize)
    finally:
        sock.close()


class ReusePortPort(AcceptBackoffPort):
    """vtwist's listening TCP port (it survives descriptor exhaustion) bound with
    ``SO_REUSEPORT``, so every worker binds the same port."""

    def createInternetSocket(self) -> socket.socket:  # noqa: N802 - Twisted's name
        """Twisted's socket (SO_REUSEADDR) with SO_REUSEPORT as well."""
        sock = super().createInternetSocket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        return sock


@implementer(IStreamServerEndpoint)
class ReusePortTCPServerEndpoint(TCPServerEndpoint):
    """A TCP server endpoint whose port other workers bind too (``SO_REUSEPORT``)."""

    def _listen(self, factory: IProtocolFactory) -> AcceptBackoffPort:
        port = ReusePortPort(self.port, factory, self.backlog, self.interface, self.reactor)
        port.startListening()
        return port


def tcp_server_endpoint(reactor: Any, port: int, interface: str) -> IStreamServerEndpoint:
    """vtwist's TCP server endpoint, or in a worker the SO_REUSEPORT one."""
    if _enabled and port != 0:
        return ReusePortTCPServerEndpoint(reactor, port, interface, BACKLOG)
    return TCPServerEndpoint(reactor, port, interface, BACKLOG)
