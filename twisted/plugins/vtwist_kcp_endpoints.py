"""Endpoint string parsers for mKCP: ``serverFromString(reactor, "kcp:port=9000:header=dtls")``
and ``clientFromString(reactor, "kcp:host=h:port=9000:header=dtls:seed=abc")``.

Kept cheap to import: vtwist is loaded only when a "kcp:" string is parsed, and then the
prefix's parsers come from vtwist's network registry.
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
class _ServerParser:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from vtwist.transport.endpoint_strings import parse_server

        return parse_server(self.prefix, reactor, *args, **kwargs)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class _ClientParser:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from vtwist.transport.endpoint_strings import parse_client

        return parse_client(self.prefix, reactor, *args, **kwargs)


kcpServerParser = _ServerParser("kcp")
kcpClientParser = _ClientParser("kcp")
