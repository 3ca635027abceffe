"""The TCP listening endpoint inbounds use: Twisted's, with a port that survives descriptor
exhaustion (:class:`vtwist.transport.internals.AcceptBackoffPort`)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory, IStreamServerEndpoint
from zope.interface import implementer

from vtwist.transport.internals import AcceptBackoffPort

#: the listen backlog (Twisted's default is 50; Go's listeners take the kernel's somaxconn):
#: clients wait here while accepting is paused for lack of descriptors
BACKLOG = 1024


@implementer(IStreamServerEndpoint)
class TCPServerEndpoint:
    """Listens on ``interface:port`` (IPv4 or IPv6 by the interface's form)."""

    def __init__(self, reactor: Any, port: int, interface: str = "",
                 backlog: int = BACKLOG) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred[Any]:  # noqa: N803
        """Fires with the listening port (an :class:`AcceptBackoffPort`)."""
        return defer.execute(self._listen, protocolFactory)

    def _listen(self, factory: IProtocolFactory) -> AcceptBackoffPort:
        port = AcceptBackoffPort(self.port, factory, self.backlog, self.interface, self.reactor)
        port.startListening()
        return port
