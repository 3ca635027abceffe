"""mKCP obfuscation headers (``kcpSettings.header.type``).

A receiver only skips ``size`` bytes; the patterns only make traffic look like the
imitated protocol.  Each object holds the mutable counters: a dialer makes one
per connection, a listener shares one across all its sessions.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable

_U16 = struct.Struct(">H")

RandomU16 = Callable[[], int]


def _random_u16() -> int:
    return random.getrandbits(16)


class NoneHeader:
    """No header (``none``)."""

    size = 0

    def next(self) -> bytes:
        """Header bytes for the next datagram."""
        return b""


class SRTPHeader:
    """``srtp``: ``B5 E8`` then a 16-bit counter incremented before each use."""

    size = 4

    def __init__(self, rand: RandomU16 = _random_u16) -> None:
        self.number = rand() & 0xFFFF

    def next(self) -> bytes:
        """Header bytes for the next datagram."""
        self.number = (self.number + 1) & 0xFFFF
        return b"\xb5\xe8" + _U16.pack(self.number)


class UTPHeader:
    """``utp``: a constant random connection id, then ``01 00``."""

    size = 4

    def __init__(self, rand: RandomU16 = _random_u16) -> None:
        self.connection_id = rand() & 0xFFFF
        self._bytes = _U16.pack(self.connection_id) + b"\x01\x00"

    def next(self) -> bytes:
        """Header bytes for the next datagram."""
        return self._bytes


class WechatVideoHeader:
    """``wechat-video``: ``A1 08`` + u32 counter (incremented before use) + constant tail."""

    size = 13
    _TAIL = bytes.fromhex("00101118302230")

    def __init__(self, rand: RandomU16 = _random_u16) -> None:
        self.sn = rand() & 0xFFFF

    def next(self) -> bytes:
        """Header bytes for the next datagram."""
        self.sn = (self.sn + 1) & 0xFFFFFFFF
        return b"\xa1\x08" + self.sn.to_bytes(4, "big") + self._TAIL


class DTLSHeader:
    """``dtls``: a fake DTLS 1.2 application-data record header."""

    size = 13
    _DTLS = struct.Struct(">BHHHIH")

    def __init__(self, rand: RandomU16 = _random_u16) -> None:
        self.epoch = rand() & 0xFFFF
        self.sequence = 0
        self.length = 17

    def next(self) -> bytes:
        """Header bytes for the next datagram."""
        out = self._DTLS.pack(23, 0xFEFD, self.epoch, 0, self.sequence, self.length)
        self.sequence = (self.sequence + 1) & 0xFFFFFFFF
        self.length += 17
        if self.length > 100:
            self.length -= 50
        return out


class WireGuardHeader:
    """``wireguard``: the constant ``04 00 00 00``."""

    size = 4

    def next(self) -> bytes:
        """Header bytes for the next datagram."""
        return b"\x04\x00\x00\x00"


HEADER_TYPES: dict[str, type] = {
    "none": NoneHeader,
    "srtp": SRTPHeader,
    "utp": UTPHeader,
    "wechat-video": WechatVideoHeader,
    "dtls": DTLSHeader,
    "wireguard": WireGuardHeader,
}

HEADER_SIZES: dict[str, int] = {name: cls.size for name, cls in HEADER_TYPES.items()}

Header = NoneHeader | SRTPHeader | UTPHeader | WechatVideoHeader | DTLSHeader | WireGuardHeader


def make_header(type_name: str | None) -> Header:
    """A fresh header object for a JSON ``header.type`` (None means ``none``)."""
    name = (type_name or "none").lower()
    try:
        cls = HEADER_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown mKCP header type {type_name!r}") from None
    return cls()
