"""Endpoint string parsers for WebSocket clients:
``clientFromString(reactor, "ws:host=example.com:port=80:path=/tunnel")`` and
``clientFromString(reactor, "wss:host=example.com:path=/tunnel:caFile=ca.pem")``.

Kept cheap to import: vtwist is loaded only when a "ws:"/"wss:" string is parsed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class _WSClientParser:
    def __init__(self, prefix: str, secure: bool) -> None:
        self.prefix = prefix
        self.secure = secure

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from vtwist.transport.ws import client_from_string

        return client_from_string(reactor, self.secure, *args, **kwargs)


wsClientParser = _WSClientParser("ws", False)
wssClientParser = _WSClientParser("wss", True)
