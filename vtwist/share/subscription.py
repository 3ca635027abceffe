"""Subscriptions: a base64 list of share links (``vmess://``, ``vless://``, ``trojan://``,
``ss://`` mixed), as v2rayN and friends serve them."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from vtwist.config import registry
from vtwist.share import fields, schemes
from vtwist.share.errors import (
    LinkError,
    UnsupportedLinkError,
    UnsupportedTransportError,
    Warn,
    default_warn,
)
from vtwist.share.schemes import ShareLink


def decode_subscription(text: str) -> list[str]:
    """The lines of a subscription body: base64 (any flavour) or already plain links."""
    stripped = text.strip()
    if "://" in stripped:
        return stripped.splitlines()
    try:
        decoded = fields.b64decode(stripped).decode("utf-8-sig")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise LinkError("body", "not base64 and not a list of links", "invalid subscription") from None
    return decoded.splitlines()


def _skip_reason(error: LinkError) -> str:
    if isinstance(error, UnsupportedTransportError):
        return "unsupported network"
    if isinstance(error, UnsupportedLinkError):
        return "unsupported"
    return "malformed"


def parse_subscription(text: str, warn: Warn | None = None) -> list[ShareLink]:
    """Every link of a subscription that vtwist can run, in order (any registered scheme).

    Each other line is skipped with one warning saying why: not a link, an unknown scheme,
    an unsupported network (or cipher, plugin, flow ...), or a malformed link.
    """
    warn = warn or default_warn
    links: list[ShareLink] = []
    for number, line in enumerate(decode_subscription(text), 1):
        line = line.strip()
        if not line:
            continue
        where = f"subscription line {number}: skipped"
        scheme = schemes.scheme_of(line)
        if not scheme:
            warn(f"{where} (not a link)")
            continue
        if schemes.lookup(scheme) is None:
            warn(f"{where} (unknown scheme {scheme}://; vtwist reads {schemes.listing()})")
            continue
        try:
            link = schemes.parse_link(line)
            link.canonical()
        except LinkError as e:
            warn(f"{where} ({_skip_reason(e)}): {e}")
            continue
        protocol = link.to_outbound()["protocol"]
        if protocol not in registry.OUTBOUND_MODULES:
            warn(f"{where} (unsupported protocol): vtwist has no {protocol} outbound yet")
            continue
        links.append(link)
    return links


def subscription_outbounds(text: str, warn: Warn | None = None) -> list[dict[str, Any]]:
    """A subscription as outbound dicts with unique tags (the link names)."""
    outbounds: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for link in parse_subscription(text, warn):
        name = link.name
        seen[name] = seen.get(name, 0) + 1
        tag = name if seen[name] == 1 else f"{name} #{seen[name]}"
        outbounds.append(link.to_outbound(tag))
    return outbounds


def pick_outbound(outbounds: list[dict[str, Any]], pick: str | None) -> dict[str, Any]:
    """The outbound named ``pick`` (its tag; or a 1-based index), else the first."""
    if not outbounds:
        raise LinkError("links", "no usable links", "invalid subscription")
    if pick is None:
        return outbounds[0]
    for ob in outbounds:
        if ob.get("tag") == pick:
            return ob
    folded = [ob for ob in outbounds if str(ob.get("tag", "")).casefold() == pick.casefold()]
    if len(folded) == 1:
        return folded[0]
    if pick.isdigit() and 1 <= int(pick) <= len(outbounds):
        return outbounds[int(pick) - 1]
    names = ", ".join(repr(ob.get("tag")) for ob in outbounds[:20])
    more = f" and {len(outbounds) - 20} more" if len(outbounds) > 20 else ""
    raise LinkError("--pick", f"no link named {pick!r} (names: {names}{more})",
                    "invalid subscription")


def encode_subscription(links: list[str]) -> str:
    """A subscription body for ``links`` (base64 of the lines)."""
    return base64.b64encode("\n".join(links).encode("utf-8")).decode("ascii")
