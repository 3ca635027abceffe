"""The share-link scheme registry: one entry per scheme vtwist reads and writes.

An entry (:class:`Scheme`) names the scheme (``vless``), the outbound protocol its links
stand for (``vless``), and two functions given as ``"module:function"`` strings, imported on
first use: ``parse(text) -> ShareLink`` and ``from_outbound(outbound, warn) -> ShareLink``.
A new scheme is one module plus one entry in :data:`SCHEMES`; nothing else branches on a
scheme's name. :func:`parse_link` and :func:`outbound_to_link` dispatch through it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from vtwist.share.errors import LinkError, Warn, relabel
from vtwist.transport.linkfields import LinkFieldError


class ShareLink(Protocol):
    """What every scheme's link model offers."""

    @property
    def name(self) -> str:
        """The link's name, or ``address:port`` when it has none."""

    def canonical(self) -> Any:
        """The same link with what means nothing cleared (raises for what vtwist cannot
        run)."""

    def ignored(self) -> list[str]:
        """Notes on fields the outbound cannot use."""

    def to_outbound(self, tag: str | None = None) -> dict[str, Any]:
        """The V2Ray 4.34 outbound dict."""

    def to_link(self) -> str:
        """The link's text in the scheme's usual form."""

    def to_url(self) -> str:
        """The link's text in its URL form."""

    def to_json(self) -> dict[str, Any]:
        """The link's fields as a JSON object."""


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, attribute = ref.partition(":")
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Scheme:
    """One link scheme: its name, its outbound protocol and its two functions."""

    name: str
    protocol: str
    #: ``(text) -> ShareLink``.
    parser: str
    #: ``(outbound, warn) -> ShareLink``.
    encoder: str

    def parse(self, text: str) -> ShareLink:
        """The link ``text`` (which starts with this scheme)."""
        return _resolve(self.parser)(text)  # type: ignore[no-any-return]

    def from_outbound(self, outbound: dict[str, Any], warn: Warn) -> ShareLink:
        """The canonical link of an outbound of this scheme's protocol."""
        what = f"cannot make a {self.name} link"
        try:
            return _resolve(self.encoder)(outbound, warn)  # type: ignore[no-any-return]
        except LinkError as e:
            raise relabel(e, what) from None
        except LinkFieldError as e:
            raise LinkError(e.field, e.message, what) from None


SCHEMES: tuple[Scheme, ...] = (
    Scheme("vmess", "vmess", "vtwist.share.link:parse_link",
           "vtwist.share.vmess_outbound:outbound_to_link"),
    Scheme("vless", "vless", "vtwist.share.vless:parse_link",
           "vtwist.share.vless:outbound_to_link"),
    Scheme("trojan", "trojan", "vtwist.share.trojan:parse_link",
           "vtwist.share.trojan:outbound_to_link"),
    Scheme("ss", "shadowsocks", "vtwist.share.shadowsocks:parse_link",
           "vtwist.share.shadowsocks:outbound_to_link"),
)


def names() -> tuple[str, ...]:
    """Every scheme's name."""
    return tuple(s.name for s in SCHEMES)


def listing() -> str:
    """``vmess://, vless://, trojan://, ss://`` (for messages)."""
    return ", ".join(f"{name}://" for name in names())


def lookup(name: str) -> Scheme | None:
    """The scheme called ``name`` (any case), or None."""
    name = name.lower()
    return next((s for s in SCHEMES if s.name == name), None)


def for_protocol(protocol: str) -> Scheme | None:
    """The scheme whose links stand for ``protocol`` outbounds, or None."""
    protocol = protocol.lower()
    return next((s for s in SCHEMES if s.protocol == protocol), None)


def scheme_of(text: str) -> str:
    """The lower-case scheme ``text`` starts with (``"vless"``), or ``""``."""
    scheme, sep, _ = text.strip().partition("://")
    return scheme.lower() if sep and scheme and scheme.isascii() and scheme.isalnum() else ""


def parse_link(text: str) -> ShareLink:
    """Parse a link of any registered scheme. Raises :class:`LinkError`."""
    if not isinstance(text, str):
        raise LinkError("link", f"expected text, got {type(text).__name__}", "invalid link")
    if not text.strip():
        raise LinkError("link", "is empty", "invalid link")
    name = scheme_of(text)
    if not name:
        raise LinkError("scheme", f"expected a link starting with one of {listing()}",
                        "invalid link")
    scheme = lookup(name)
    if scheme is None:
        raise LinkError("scheme", f"unknown scheme {name}:// (vtwist reads {listing()})",
                        "invalid link")
    return scheme.parse(text)


def outbound_to_link(outbound: Any, warn: Warn) -> ShareLink:
    """The canonical link of an outbound dict whose protocol has a scheme."""
    if not isinstance(outbound, dict):
        raise LinkError("outbound", f"expected an object, got {type(outbound).__name__}",
                        "cannot make a link")
    protocol = str(outbound.get("protocol", ""))
    scheme = for_protocol(protocol)
    if scheme is None:
        protocols = ", ".join(s.protocol for s in SCHEMES)
        raise LinkError("protocol", f"{protocol.lower() or 'no protocol'} outbounds have no "
                                    f"share link (links stand for {protocols})",
                        "cannot make a link")
    return scheme.from_outbound(outbound, warn)
