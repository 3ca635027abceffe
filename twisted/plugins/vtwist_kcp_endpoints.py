"""Endpoint string parsers for mKCP: ``serverFromString(reactor, "kcp:port=9000:header=dtls")``
and ``clientFromString(reactor, "kcp:host=h:port=9000:header=dtls:seed=abc")``.

Kept cheap to import (it needs only :mod:`vtwist.transport.plugin_parsers`): the rest
of vtwist is loaded only when a "kcp:" string is parsed, and then the
prefix's parsers come from vtwist's network registry.
"""

from __future__ import annotations

from vtwist.transport.plugin_parsers import client_parser, server_parser

kcpServerParser = server_parser("kcp")
kcpClientParser = client_parser("kcp")
