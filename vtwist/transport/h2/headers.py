"""Header lists as h2 gives them: a dict of the first values, and the X-Forwarded-For peer."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address

from vtwist.transport.forwarded import forwarded_peer


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def header_dict(headers: Any) -> dict[str, str]:
    """h2's header list as a dict (lower-case names; the first value of a repeated name)."""
    out: dict[str, str] = {}
    for name, value in headers or ():
        out.setdefault(_text(name).lower(), _text(value))
    return out


def forwarded_for(headers: dict[str, str]) -> IPv4Address | IPv6Address | None:
    """The first X-Forwarded-For address as a peer (port 0, as V2Ray), if valid."""
    return forwarded_peer(headers.get("x-forwarded-for"))
