"""Endpoint string parsers for share links: ``clientFromString(reactor,
"vmess:link=<link>:host=example.com:port=443")``, and the same with ``vless:``,
``trojan:`` and ``ss:`` (``vtwist.share.endpoints.endpoint_string`` escapes a link's ``:``
and ``=``).

Kept cheap to import: vtwist is loaded only when such a string is parsed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IStreamClientEndpointStringParserWithReactor
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class _LinkParser:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        from vtwist.share.endpoints import parse_client

        return parse_client(self.prefix, reactor, *args, **kwargs)


vmessLinkParser = _LinkParser("vmess")
vlessLinkParser = _LinkParser("vless")
trojanLinkParser = _LinkParser("trojan")
ssLinkParser = _LinkParser("ss")
