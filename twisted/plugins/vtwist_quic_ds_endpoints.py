"""Endpoint string parsers for QUIC and domain sockets:
``serverFromString(reactor, "quic:port=9443:security=aes-128-gcm:key=k")``,
``clientFromString(reactor, "quic:host=h:port=9443:security=aes-128-gcm:key=k")``,
``serverFromString(reactor, "ds:path=@vtwist:abstract=1:padding=1")``.

Kept cheap to import: vtwist is loaded only when such a string is parsed, and then the
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


quicServerParser = _ServerParser("quic")
quicClientParser = _ClientParser("quic")
dsServerParser = _ServerParser("ds")
dsClientParser = _ClientParser("ds")
