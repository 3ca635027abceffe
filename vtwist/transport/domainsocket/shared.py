"""UNIX listening sockets shared by the workers of ``--workers N`` (:mod:`vtwist.app.workers`).

A socket path has one owner, so workers cannot each bind it as they bind a TCP port with
``SO_REUSEPORT``: the supervisor creates and binds every UNIX listening socket itself
(:func:`~vtwist.transport.domainsocket.endpoints.hold`, the single-process endpoint's lock,
stale-socket and permission rules) and passes the descriptors to each worker it starts. A
worker gives :func:`install` the table "socket address -> descriptor" before its service is
built; then :func:`~vtwist.transport.domainsocket.endpoints.server_endpoint` adopts the
descriptor for that address (:class:`SharedUNIXPort`, what ``reactor.adoptStreamPort``
makes, minus the chmod at the start and the shutdown and unlink at the stop) instead of
binding, and every worker accepts on the same socket (the kernel hands each connection to
one of them).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from typing import Any

from twisted.internet import base, defer, error, unix
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

_fds: dict[str, int] = {}


def install(fds: Mapping[str, int]) -> None:
    """Adopt these listening descriptors (by socket address) instead of binding (a worker
    calls this once, before its service is built)."""
    _fds.clear()
    _fds.update(fds)


def shared_fd(address: str) -> int | None:
    """The inherited listening descriptor for ``address`` (None: bind it as usual)."""
    return _fds.get(address)


class SharedUNIXPort(unix.Port):
    """Twisted's UNIX port accepting on the inherited listening socket ``fd`` (a copy of
    it: ``fd`` stays open, so a reload can take the socket again).

    It never binds, listens or chmods (the supervisor did, once, as the single-process
    endpoint does: a worker restarted later must not touch whatever is at the path by
    then), and when it stops it only closes its copy: no ``shutdown()`` (on a listening
    UNIX socket that would refuse every connection for every worker: one socket, one
    state) and no unlink (the supervisor removes the path when it stops).
    """

    def __init__(self, fd: int, factory: IProtocolFactory, reactor: Any) -> None:
        sock = socket.socket(fileno=os.dup(fd))
        try:
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise error.CannotListenError(None, f"fd {fd}", "not a UNIX stream socket")
            sock.setblocking(False)
            super().__init__(sock.getsockname(), factory, reactor=reactor)
        except BaseException:
            sock.close()
            raise
        self.shared = sock

    def startListening(self) -> None:  # noqa: N802 - Twisted's name
        """Accept on the shared socket."""
        self.factory.doStart()
        self.connected = True
        self.socket = self.shared
        self.fileno = self.socket.fileno
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        """As ``tcp.Port.connectionLost`` does, but close this copy of the socket without
        shutting it down; no unlink, no lock file to release."""
        base.BasePort.connectionLost(self, reason)
        self.connected = False
        with contextlib.suppress(OSError):
            self.socket.close()
        del self.socket
        del self.fileno
        try:
            self.factory.doStop()
        finally:
            self.disconnecting = False


def adopt(reactor: Any, fd: int, factory: IProtocolFactory) -> IListeningPort:
    """Accept on the listening UNIX socket ``fd`` (a :class:`SharedUNIXPort`)."""
    port = SharedUNIXPort(fd, factory, reactor)
    port.startListening()
    return port


@implementer(IStreamServerEndpoint)
class SharedUNIXServerEndpoint:
    """A server endpoint that listens by adopting the supervisor's socket ``fd``."""

    def __init__(self, reactor: Any, fd: int) -> None:
        self.reactor = reactor
        self.fd = fd

    def listen(self, factory: IProtocolFactory) -> defer.Deferred[IListeningPort]:
        """Accept on the shared socket (fails like a bind would, e.g. a closed fd)."""
        return defer.execute(adopt, self.reactor, self.fd, factory)
