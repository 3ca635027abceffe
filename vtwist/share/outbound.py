"""Outbound JSON <-> share link, for every scheme, and finding the outbound in a config.

:func:`link_to_outbound` and :func:`outbound_to_link` dispatch through the scheme registry
(:mod:`vtwist.share.schemes`); :func:`outbound_to_link` is the inverse of a link's
``to_outbound``. What a network's ``*Settings`` mean as link fields comes from its registry
entry (:mod:`vtwist.transport.linkfields`). Settings a link cannot express are dropped with
a warning.
"""

from __future__ import annotations

from typing import Any

from vtwist.share import fields, schemes
from vtwist.share.errors import LinkError, Warn, default_warn
from vtwist.share.schemes import ShareLink

CANNOT_ENCODE = "cannot make a link"


def link_to_outbound(link: str, tag: str | None = None) -> dict[str, Any]:
    """Parse a link of any scheme and return its outbound dict."""
    return schemes.parse_link(link).to_outbound(tag)


def outbound_to_link(outbound: dict[str, Any], warn: Warn | None = None) -> ShareLink:
    """The link for an outbound dict (vmess, vless, trojan or shadowsocks).

    Settings a link cannot express are dropped with a warning through ``warn``.
    """
    return schemes.outbound_to_link(outbound, warn or default_warn)


def _has_link(outbound: Any) -> bool:
    return isinstance(outbound, dict) and schemes.for_protocol(
        str(outbound.get("protocol", ""))) is not None


def find_outbound(config: dict[str, Any], tag: str | None = None) -> dict[str, Any]:
    """The outbound tagged ``tag`` in a full config, else its first one that has a link."""
    outbounds = fields.obj(config, "config").get("outbounds")
    if not isinstance(outbounds, list) or not outbounds:
        raise LinkError("outbounds", "the config has no outbounds", CANNOT_ENCODE)
    if tag is not None:
        for ob in outbounds:
            if isinstance(ob, dict) and ob.get("tag") == tag:
                return ob
        tags = [str(ob.get("tag")) for ob in outbounds if isinstance(ob, dict) and ob.get("tag")]
        raise LinkError("--outbound", f"no outbound tagged {tag!r} "
                        f"(tags: {', '.join(tags) or 'none'})", CANNOT_ENCODE)
    for ob in outbounds:
        if _has_link(ob):
            return ob
    protocols = ", ".join(s.protocol for s in schemes.SCHEMES)
    raise LinkError("outbounds", f"the config has no outbound with a share link ({protocols})",
                    CANNOT_ENCODE)
