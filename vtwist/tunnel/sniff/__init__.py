"""Sniffing: the protocol of a client's first bytes and the domain they name (HTTP ``Host``,
TLS SNI; BitTorrent's handshake names none), sans-IO.

:func:`sniff` looks at the bytes a client sent so far and answers :class:`Sniffed`, or
:data:`~vtwist.sansio.NEED_DATA` while some sniffer still needs more, or None when no
sniffer recognises the content. As V2Ray 4.34, a sniffer that has said "not mine" is not
asked again, and HTTP is tried before TLS.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vtwist.sansio import NEED_DATA, Event, NeedData
from vtwist.tunnel.sniff import bittorrent, http, tls

#: V2Ray reads at most one buffer (2 KiB) for sniffing; a ClientHello with many extensions
#: can be larger, so vtwist looks at up to 16 KiB before it gives up.
MAX_SNIFF_BYTES = 16 * 1024

SNIFFERS: dict[str, Callable[[bytes], object]] = {
    "http": http.sniff_http,
    "tls": tls.sniff_tls,
    "bittorrent": bittorrent.sniff_bittorrent,
}


@dataclass(frozen=True)
class Sniffed(Event):
    """The client's first bytes are ``protocol`` (``http1``, ``tls``, ``bittorrent``) for
    ``domain`` ("" when the protocol names none)."""

    protocol: str
    domain: str


class Sniffer:
    """Runs the sniffers over a growing prefix of the client's bytes."""

    def __init__(self, protocols: Sequence[str] = ("http", "tls", "bittorrent")) -> None:
        self.pending = [SNIFFERS[p] for p in SNIFFERS if p in protocols]

    def sniff(self, data: bytes) -> Sniffed | NeedData | None:
        """The verdict on ``data`` (everything the client sent so far)."""
        still: list[Callable[[bytes], object]] = []
        for sniffer in self.pending:
            result = sniffer(data)
            if result is NEED_DATA:
                still.append(sniffer)
            elif result is not None:
                protocol, domain = result  # type: ignore[misc]
                return Sniffed(protocol, domain)
        self.pending = still
        if still and len(data) < MAX_SNIFF_BYTES:
            return NEED_DATA
        return None


def should_override(sniffed: Sniffed, dest_override: Sequence[str]) -> bool:
    """True when ``destOverride`` names the sniffed protocol (``http`` matches ``http1``)
    and it named a domain."""
    return bool(sniffed.domain) and any(sniffed.protocol.startswith(p) for p in dest_override)
