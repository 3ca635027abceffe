"""Endpoint string parsers for WebSocket clients:
``clientFromString(reactor, "ws:host=example.com:port=80:path=/tunnel")`` and
``clientFromString(reactor, "wss:host=example.com:path=/tunnel:caFile=ca.pem")``.

Kept cheap to import (it needs only :mod:`vtwist.transport.plugin_parsers`): the rest
of vtwist is loaded only when a "ws:"/"wss:" string is parsed, and then
the prefix's parser comes from vtwist's network registry.
"""

from __future__ import annotations

from vtwist.transport.plugin_parsers import client_parser

wsClientParser = client_parser("ws")
wssClientParser = client_parser("wss")
