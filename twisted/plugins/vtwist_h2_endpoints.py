"""Endpoint string parsers for the tunnels over HTTP/2:
``serverFromString(reactor, "h2:port=8443:path=/tunnel:hostHeader=example.com")``,
``clientFromString(reactor, "h2:host=example.com:port=443:tls=true:path=/tunnel")``,
``serverFromString(reactor, "grpc:port=8443:serviceName=svc")`` and
``clientFromString(reactor, "grpc:host=example.com:serviceName=svc:mode=multi")``.

Kept cheap to import: vtwist is loaded only when such a string is parsed, and then the
prefix's parser comes from vtwist's network registry.
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


h2ServerParser = _ServerParser("h2")
h2ClientParser = _ClientParser("h2")
grpcServerParser = _ServerParser("grpc")
grpcClientParser = _ClientParser("grpc")
