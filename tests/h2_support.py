"""Test support for the HTTP/2 transports: pooled client connections closed at cleanup, and
the server side of each seen closed too (else trial may find it still open)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from tests.netutil import wait_until
from vtwist.transport.h2.endpoints import H2ServerFactory, close_connections


def clean_h2(test: Any) -> None:
    """At ``test``'s cleanup: close every pooled client connection, then wait until every
    server connection built during the test is gone."""
    servers: list[Any] = []
    build = H2ServerFactory.buildProtocol

    def record(factory: H2ServerFactory, addr: Any) -> Any:
        servers.append(build(factory, addr))
        return servers[-1]

    test.patch(H2ServerFactory, "buildProtocol", record)
    # Cleanups run last first.
    test.addCleanup(lambda: defer.ensureDeferred(wait_until(
        lambda: all(p.gone for p in servers), "HTTP/2 server connections still open")))
    test.addCleanup(close_connections)
