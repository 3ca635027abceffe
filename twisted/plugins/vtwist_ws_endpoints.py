"""Endpoint string parsers for WebSocket clients:
``clientFromString(reactor, "ws:host=example.com:port=80:path=/tunnel")`` and
``clientFromString(reactor, "wss:host=example.com:path=/tunnel:caFile=ca.pem")``.

Kept cheap to import: vtwist is loaded only when a "ws:"/"wss:" string is parsed, and then
the prefix's parser comes from vtwist's network registry.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class _ClientParser:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from vtwist.transport.endpoint_strings import parse_client

        return parse_client(self.prefix, reactor, *args, **kwargs)


wsClientParser = _ClientParser("ws")
wssClientParser = _ClientParser("wss")
