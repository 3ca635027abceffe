"""Start vtwist's real service tree inside the test process."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor

from vtwist.config.loader import parse_config
from vtwist.service import build_service


def start_service(config: Any, test: Any = None) -> defer.Deferred[Any]:
    """Build and start the service for ``config`` (a V2Ray JSON dict or a parsed config).

    Fires with the service once every inbound listens. With ``test`` (a TestCase) the
    service is stopped at its cleanup.
    """
    if isinstance(config, dict):
        config = parse_config(config)
    service = build_service(config, reactor)
    service.startService()
    if test is not None:
        test.addCleanup(service.stopService)
    return service.whenListening().addCallback(lambda _: service)


def serve_web(test: Any, pages: dict[bytes, bytes], port: int = 0,
              interface: str = "127.0.0.1") -> int:
    """A local web server with ``pages`` (path segment -> body) until ``test``'s cleanup;
    returns its port."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from twisted.web.static import Data

    root = Resource()
    for name, body in pages.items():
        root.putChild(name, Data(body, "application/octet-stream"))
    web = reactor.listenTCP(port, Site(root), interface=interface)
    test.addCleanup(web.stopListening)
    return web.getHost().port

