"""Compatibility names for code written against ``vtwist.links``.

Share links live in :mod:`vtwist.share` (the scheme registry ``schemes``; ``link`` for
``vmess://``, ``vless``, ``trojan``, ``shadowsocks``; ``outbound``, ``subscription``, ``qr``);
which networks links can name comes from :mod:`vtwist.transport.registry`. New code imports
from those. Client-config generation (``client_config``, ``client_config_from_link``,
``client_config_from_subscription``, ``parse_socks``) moved to :mod:`vtwist.genconfig`, an
application module this share-layer alias may not import.
"""

from __future__ import annotations

from vtwist.share.errors import LinkError, UnsupportedLinkError, UnsupportedTransportError
from vtwist.share.fields import SECURITIES
from vtwist.share.link import SCHEME, VmessLink, link_from_json, parse_link
from vtwist.share.outbound import CANNOT_ENCODE, find_outbound, link_to_outbound, outbound_to_link
from vtwist.share.schemes import parse_link as parse_any_link
from vtwist.share.subscription import (
    decode_subscription,
    encode_subscription,
    parse_subscription,
    pick_outbound,
    subscription_outbounds,
)
from vtwist.transport import linkfields, registry

#: Snapshots of the registry when this module was imported.
SUPPORTED_NETWORKS = registry.link_names()
UNSUPPORTED_NETWORKS = tuple(n.name for n in registry.UNSUPPORTED)
KCP_HEADERS = linkfields.KCP.header_types
TCP_HEADERS = linkfields.TCP.header_types

__all__ = [
    "LinkError", "UnsupportedLinkError", "UnsupportedTransportError", "VmessLink",
    "parse_link", "parse_any_link", "link_from_json",
    "link_to_outbound", "outbound_to_link", "find_outbound", "decode_subscription",
    "parse_subscription", "subscription_outbounds", "pick_outbound", "encode_subscription",
    "SCHEME", "SECURITIES", "CANNOT_ENCODE", "SUPPORTED_NETWORKS",
    "UNSUPPORTED_NETWORKS", "KCP_HEADERS", "TCP_HEADERS",
]
