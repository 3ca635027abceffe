"""Endpoint string parsers for QUIC and domain sockets:
``serverFromString(reactor, "quic:port=9443:security=aes-128-gcm:key=k")``,
``clientFromString(reactor, "quic:host=h:port=9443:security=aes-128-gcm:key=k")``,
``serverFromString(reactor, "ds:path=@vtwist:abstract=1:padding=1")``.

Kept cheap to import (it needs only :mod:`vtwist.transport.plugin_parsers`): the rest
of vtwist is loaded only when such a string is parsed, and then the
prefix's parsers come from vtwist's network registry.
"""

from __future__ import annotations

from vtwist.transport.plugin_parsers import client_parser, server_parser

quicServerParser = server_parser("quic")
quicClientParser = client_parser("quic")
dsServerParser = server_parser("ds")
dsClientParser = client_parser("ds")
