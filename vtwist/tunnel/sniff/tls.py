"""The TLS sniffer: the server name (SNI) of a ClientHello, reassembled across records
and across however many reads it arrived in."""

from __future__ import annotations

from vtwist.address import is_valid_domain
from vtwist.sansio import NEED_DATA, NeedData

HANDSHAKE = 0x16
CLIENT_HELLO = 0x01
EXT_SERVER_NAME = 0x0000
#: A ClientHello longer than this is not sniffed (post-quantum key shares make them ~2 KiB).
MAX_HELLO = 16 * 1024


def _handshake_bytes(data: bytes) -> bytes | NeedData | None:
    """The handshake message bytes carried by the leading handshake records."""
    out = bytearray()
    offset = 0
    want: int | None = None
    while True:
        if want is not None and len(out) >= want:
            return bytes(out[:want])
        if len(data) < offset + 5:
            return NEED_DATA
        if data[offset] != HANDSHAKE or data[offset + 1] != 3:
            return None
        length = int.from_bytes(data[offset + 3:offset + 5], "big")
        if length == 0 or length > 16384 + 2048:
            return None
        body = data[offset + 5:offset + 5 + length]
        out += body
        if want is None and len(out) >= 4:
            if out[0] != CLIENT_HELLO:
                return None
            want = 4 + int.from_bytes(out[1:4], "big")
            if want > MAX_HELLO:
                return None
        if len(body) < length:
            if want is not None and len(out) >= want:
                return bytes(out[:want])
            return NEED_DATA
        offset += 5 + length


def server_name(hello: bytes) -> str | None:
    """The host_name entry of a complete ClientHello message (with its 4-byte header)."""
    try:
        pos = 4 + 2 + 32  # header, client_version, random
        pos += 1 + hello[pos]  # session_id
        suites = int.from_bytes(hello[pos:pos + 2], "big")
        if suites % 2:
            return None
        pos += 2 + suites
        pos += 1 + hello[pos]  # compression methods
        if pos + 2 > len(hello):
            return None
        end = pos + 2 + int.from_bytes(hello[pos:pos + 2], "big")
        if end > len(hello):
            return None
        pos += 2
        while pos + 4 <= end:
            kind = int.from_bytes(hello[pos:pos + 2], "big")
            length = int.from_bytes(hello[pos + 2:pos + 4], "big")
            pos += 4
            if pos + length > end:
                return None
            if kind == EXT_SERVER_NAME:
                return _host_name(hello[pos:pos + length])
            pos += length
    except IndexError:
        return None
    return None


def _host_name(ext: bytes) -> str | None:
    if len(ext) < 2 or int.from_bytes(ext[:2], "big") != len(ext) - 2:
        return None
    pos = 2
    while pos + 3 <= len(ext):
        kind = ext[pos]
        length = int.from_bytes(ext[pos + 1:pos + 3], "big")
        pos += 3
        if pos + length > len(ext):
            return None
        if kind == 0:
            try:
                name = ext[pos:pos + length].decode("ascii").lower()
            except UnicodeDecodeError:
                return None
            return name if name and not name.endswith(".") and is_valid_domain(name) else None
        pos += length
    return None


def sniff_tls(data: bytes) -> tuple[str, str] | NeedData | None:
    """``("tls", name)`` for a ClientHello with SNI, NEED_DATA while it is incomplete,
    None for anything else (no SNI included)."""
    hello = _handshake_bytes(data)
    if hello is None or hello is NEED_DATA:
        return hello  # type: ignore[return-value]
    name = server_name(hello)  # type: ignore[arg-type]
    return ("tls", name) if name else None
