"""Endpoint string parsers for share links: ``clientFromString(reactor,
"vmess:link=<link>:host=example.com:port=443")``, and the same with ``vless:``,
``trojan:`` and ``ss:`` (``vtwist.share.endpoints.endpoint_string`` escapes a link's ``:``
and ``=``).

Kept cheap to import (it needs only :mod:`vtwist.transport.plugin_parsers`): the rest
of vtwist is loaded only when such a string is parsed.
"""

from __future__ import annotations

from vtwist.transport.plugin_parsers import client_parser

LINK = "vtwist.share.endpoints:parse_client"

vmessLinkParser = client_parser("vmess", LINK)
vlessLinkParser = client_parser("vless", LINK)
trojanLinkParser = client_parser("trojan", LINK)
ssLinkParser = client_parser("ss", LINK)
