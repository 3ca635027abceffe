"""Endpoint string parsers for mKCP: ``serverFromString(reactor, "kcp:port=9000:header=dtls")``
and ``clientFromString(reactor, "kcp:host=h:port=9000:header=dtls:seed=abc")``.

Kept cheap to import: vtwist is loaded only when a "kcp:" string is parsed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamServerEndpointStringParser)
class _KCPServerParser:
    prefix = "kcp"

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from vtwist.transport.kcp.endpoints import server_from_string

        return server_from_string(reactor, *args, **kwargs)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class _KCPClientParser:
    prefix = "kcp"

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from vtwist.transport.kcp.endpoints import client_from_string

        return client_from_string(reactor, *args, **kwargs)


kcpServerParser = _KCPServerParser()
kcpClientParser = _KCPClientParser()
