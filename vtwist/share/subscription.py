"""Subscriptions: a base64 list of share links, as v2rayN and friends serve them."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from vtwist.share import fields
from vtwist.share.errors import LinkError, Warn, default_warn
from vtwist.share.link import VmessLink, parse_link


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


def parse_subscription(text: str, warn: Warn | None = None) -> list[VmessLink]:
    """All usable vmess links of a subscription; other lines are skipped with a warning."""
    warn = warn or default_warn
    links: list[VmessLink] = []
    for number, line in enumerate(decode_subscription(text), 1):
        line = line.strip()
        if not line:
            continue
        scheme = line.partition("://")[0].lower() if "://" in line else ""
        if scheme != "vmess":
            what = f"a {scheme}:// link" if scheme else "not a link"
            warn(f"subscription line {number}: skipped, {what} (vtwist reads vmess:// only)")
            continue
        try:
            link = parse_link(line)
            link.canonical()
        except LinkError as e:
            warn(f"subscription line {number}: skipped, {e}")
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
        raise LinkError("links", "no usable vmess links", "invalid subscription")
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
