"""The endpoint-string parser objects the dropins in ``twisted/plugins`` declare.

A dropin is one line per prefix (``kcpServerParser = server_parser("kcp")``). Importing this
module stays cheap: it needs only Twisted's interfaces; the function a parser calls
(``"module:attribute"``) is imported when a string with its prefix is parsed.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.internet.interfaces import (
    IStreamClientEndpointStringParserWithReactor,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

SERVER = "vtwist.transport.endpoint_strings:parse_server"
CLIENT = "vtwist.transport.endpoint_strings:parse_client"


def _call(target: str, prefix: str, reactor: Any, args: Any, kwargs: Any) -> Any:
    module, _, attribute = target.partition(":")
    parse = getattr(importlib.import_module(module), attribute)
    return parse(prefix, reactor, *args, **kwargs)


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ServerParser:
    """``serverFromString`` for ``prefix``: ``target(prefix, reactor, *args, **kwargs)``."""

    def __init__(self, prefix: str, target: str = SERVER) -> None:
        self.prefix = prefix
        self.target = target

    def parseStreamServer(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        """The server endpoint the string's arguments describe."""
        return _call(self.target, self.prefix, reactor, args, kwargs)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class ClientParser:
    """``clientFromString`` for ``prefix``: ``target(prefix, reactor, *args, **kwargs)``."""

    def __init__(self, prefix: str, target: str = CLIENT) -> None:
        self.prefix = prefix
        self.target = target

    def parseStreamClient(self, reactor: Any, *args: Any, **kwargs: Any) -> Any:
        """The client endpoint the string's arguments describe."""
        return _call(self.target, self.prefix, reactor, args, kwargs)


def server_parser(prefix: str, target: str = SERVER) -> ServerParser:
    """A server parser plugin for ``prefix`` (by default through the network registry)."""
    return ServerParser(prefix, target)


def client_parser(prefix: str, target: str = CLIENT) -> ClientParser:
    """A client parser plugin for ``prefix`` (by default through the network registry)."""
    return ClientParser(prefix, target)
