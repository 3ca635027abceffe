"""A listening socket whose inbound can be replaced without closing it (hot reload).

:class:`SwitchEndpoint` wraps an inbound's server endpoint; what it listens with is a
:class:`SwitchingFactory`, which builds each new connection with the factory it holds now.
:meth:`SwitchingFactory.switch` puts a newly built factory in place: the socket stays open,
the next connection gets the new settings, and the connections the old factory built go on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer


class SwitchingFactory(Factory):
    """Builds connections with ``current``; forwards its start/stop to it."""

    noisy = False

    def __init__(self, current: Any) -> None:
        self.current = current
        self.ports = 0

    def doStart(self) -> None:
        """One more port listens with us: so it does with ``current``."""
        self.ports += 1
        self.current.doStart()

    def doStop(self) -> None:
        """A port stopped listening."""
        if self.ports:
            self.ports -= 1
            self.current.doStop()

    def buildProtocol(self, addr: Any) -> Protocol | None:
        """A connection of the factory in place now."""
        return self.current.buildProtocol(addr)  # type: ignore[no-any-return]

    @property
    def handshakes(self) -> Any:
        """The cap on connections in handshake of the factory in place now (a layer below
        the inbound's protocol, e.g. a WebSocket upgrade, counts against it)."""
        return getattr(self.current, "handshakes", None)

    def switch(self, factory: Any) -> Any:
        """Build the next connections with ``factory``; returns the one it replaces (its
        connections are left alone)."""
        old, self.current = self.current, factory
        for _ in range(self.ports):
            factory.doStart()
        for _ in range(self.ports):
            old.doStop()
        return old


@implementer(IStreamServerEndpoint)
class SwitchEndpoint:
    """Listens on ``endpoint`` through a :class:`SwitchingFactory` (kept in ``switch``)."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint
        self.switch: SwitchingFactory | None = None

    def listen(self, factory: Any) -> Deferred[Any]:
        """Listen with a switchable stand-in for ``factory``."""
        self.switch = SwitchingFactory(factory)
        return self.endpoint.listen(self.switch)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.endpoint, name)
