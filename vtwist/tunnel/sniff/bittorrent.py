"""BitTorrent's peer handshake (``\\x13BitTorrent protocol``), as V2Ray 4.34 sniffs it."""

from __future__ import annotations

from vtwist.sansio import NEED_DATA, NeedData

_HANDSHAKE = b"\x13BitTorrent protocol"


def sniff_bittorrent(data: bytes) -> tuple[str, str] | NeedData | None:
    """``("bittorrent", "")`` for a peer handshake, NEED_DATA under 20 bytes, else None."""
    if len(data) < len(_HANDSHAKE):
        return NEED_DATA
    return ("bittorrent", "") if data.startswith(_HANDSHAKE) else None
