"""Trojan's wire format, sans-IO, as V2Ray 4.34's ``proxy/trojan/protocol.go`` has it.

Request (client to server, once, before the payload)::

    hex(SHA-224(password)) (56 bytes) CRLF command (1 TCP, 3 UDP) ATYP address port CRLF

After the request a TCP stream carries the payload as it is. A UDP request (command 3)
carries datagrams, each framed as::

    ATYP address port, length (2 bytes, big endian, at most 8192), CRLF, payload

in both directions (the server's replies name the source). The address is SOCKS5's
(1 IPv4, 3 domain, 4 IPv6).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from vtwist.address import Destination
from vtwist.proxy.socks.codec import AddressError, decode_address, encode_address
from vtwist.sansio import NEED_DATA, Event, NeedData

__all__ = [
    "CMD_TCP", "CMD_UDP", "CRLF", "KEY_SIZE", "MAX_PACKET", "HEADER_MIN",
    "TrojanError", "Request", "Packet", "NotTrojan", "Accepted", "Malformed",
    "password_key", "encode_request", "parse_request", "encode_packet", "PacketDecoder",
    "RequestReader",
]

CMD_TCP = 1
CMD_UDP = 3
CRLF = b"\r\n"
#: hex SHA-224: 28 bytes as 56 hex digits
KEY_SIZE = 56
#: the key and its CRLF: fewer bytes than this in the first read is not Trojan (4.34)
HEADER_MIN = KEY_SIZE + 2
#: the largest UDP payload one packet may carry (4.34's ``maxLength``)
MAX_PACKET = 8192

_LEN = struct.Struct(">H")
_HEX = frozenset(b"0123456789abcdef")


class TrojanError(ValueError):
    """Bytes that are not a well-formed Trojan request or packet."""


def password_key(password: str) -> bytes:
    """The 56 lower-case hex digits of SHA-224 of ``password`` (UTF-8), as ASCII bytes."""
    return hashlib.sha224(password.encode("utf-8")).hexdigest().encode("ascii")


def _address(destination: Destination) -> bytes:
    try:
        return encode_address(destination.host, destination.port)
    except (ValueError, UnicodeError) as e:
        raise TrojanError(f"cannot carry {destination}: {e}") from None


def encode_request(key: bytes, command: int, destination: Destination) -> bytes:
    """The request header for ``destination`` with the hex ``key`` of a password."""
    if len(key) != KEY_SIZE:
        raise ValueError(f"key must be {KEY_SIZE} bytes, got {len(key)}")
    return b"".join((key, CRLF, bytes((command,)), _address(destination), CRLF))


@dataclass(frozen=True)
class Request(Event):
    """A parsed request header; the payload starts at ``end``."""

    key: bytes
    command: int
    destination: Destination
    end: int


def _decode_address(data: bytes | bytearray | memoryview, offset: int, network: str
                    ) -> tuple[Destination, int] | NeedData:
    try:
        got = decode_address(data, offset)
    except AddressError as e:
        raise TrojanError(str(e)) from None
    if got is NEED_DATA:
        return NEED_DATA
    host, port, end = got  # type: ignore[misc]
    return Destination(network, host, port), end  # type: ignore[arg-type]


def parse_request(data: bytes | bytearray) -> Request | NeedData:
    """Parse a whole request header at the start of ``data`` (NEED_DATA if incomplete).

    As in 4.34 only command 3 means UDP; any other command byte is a TCP request.
    """
    if len(data) < HEADER_MIN + 1:
        if len(data) >= HEADER_MIN and data[KEY_SIZE:HEADER_MIN] != CRLF:
            raise TrojanError("no CRLF after the password key")
        return NEED_DATA
    if data[KEY_SIZE:HEADER_MIN] != CRLF:
        raise TrojanError("no CRLF after the password key")
    command = data[HEADER_MIN]
    network = "udp" if command == CMD_UDP else "tcp"
    got = _decode_address(data, HEADER_MIN + 1, network)
    if got is NEED_DATA:
        return NEED_DATA
    destination, end = got  # type: ignore[misc]
    if len(data) < end + 2:
        return NEED_DATA
    if data[end:end + 2] != CRLF:
        raise TrojanError("no CRLF after the address")
    return Request(bytes(data[:KEY_SIZE]), command, destination, end + 2)


# -- UDP packets ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Packet(Event):
    """One UDP datagram and the address it goes to (or, from the server, comes from)."""

    destination: Destination
    payload: bytes


def encode_packet(destination: Destination, payload: bytes) -> bytes:
    """Frame one datagram; a payload over :data:`MAX_PACKET` is split as 4.34 splits it."""
    address = _address(destination)
    if len(payload) <= MAX_PACKET:
        return b"".join((address, _LEN.pack(len(payload)), CRLF, payload))
    return b"".join(encode_packet(destination, payload[i:i + MAX_PACKET])
                    for i in range(0, len(payload), MAX_PACKET))


class PacketDecoder:
    """Turns a stream of framed datagrams into :class:`Packet` events."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes waiting for the rest of their packet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        """The packets ``data`` completes. Raises :class:`TrojanError` on a bad frame
        (then the stream is beyond repair)."""
        buf = self._buf
        buf += data
        packets: list[Packet] = []
        pos = 0
        n = len(buf)
        while pos < n:
            got = _decode_address(buf, pos, "udp")
            if got is NEED_DATA:
                break
            destination, end = got  # type: ignore[misc]
            if n < end + 4:
                break
            (length,) = _LEN.unpack_from(buf, end)
            if length > MAX_PACKET:
                raise TrojanError(f"oversize payload ({length} bytes)")
            if buf[end + 2:end + 4] != CRLF:
                raise TrojanError("no CRLF after the packet length")
            start = end + 4
            if n < start + length:
                break
            packets.append(Packet(destination, bytes(buf[start:start + length])))
            pos = start + length
        if pos:
            del buf[:pos]
        return packets


# -- the server's first read ------------------------------------------------------------------
@dataclass(frozen=True)
class NotTrojan(Event):
    """The first bytes are not a request of a known user: fall back (or drain)."""

    reason: str


@dataclass(frozen=True)
class Malformed(Event):
    """A known user's key, then a broken header: close without an answer."""

    reason: str


@dataclass(frozen=True)
class Accepted(Event):
    """A request of a known user; ``leftover`` is the payload that came with it."""

    user: object
    command: int
    destination: Destination
    leftover: bytes


class RequestReader:
    """The server's reading of a connection's first bytes, as 4.34 decides.

    ``users`` maps a 56-byte hex key to its user. 4.34 decides on its first read: fewer than
    58 bytes, or no CR at byte 56, is "not trojan"; then the key must be a user's. vtwist
    waits for more only while every byte so far could still begin a user's request (a
    request split over reads), so a short probe or a browser's request falls back at once.
    """

    def __init__(self, users: dict[bytes, object]) -> None:
        self.users = users
        self._buf = bytearray()
        self.user: object | None = None

    @property
    def buffered(self) -> bytes:
        """Every byte read so far (what a fallback must replay)."""
        return bytes(self._buf)

    def _could_be_user(self) -> bool:
        head = bytes(self._buf[:KEY_SIZE])
        if not all(c in _HEX for c in head):
            return False
        if len(self._buf) > KEY_SIZE and self._buf[KEY_SIZE] != 0x0D:
            return False
        return any(k.startswith(head) for k in self.users)

    def feed(self, data: bytes) -> Accepted | NotTrojan | Malformed | NeedData:
        """Read more; an answer once the first bytes decide."""
        self._buf += data
        buf = self._buf
        if self.user is None:
            if len(buf) < HEADER_MIN:
                if self._could_be_user():
                    return NEED_DATA
                return NotTrojan(f"not trojan protocol ({len(buf)} bytes)")
            if buf[KEY_SIZE] != 0x0D:
                return NotTrojan("not trojan protocol (no CR after 56 bytes)")
            user = self.users.get(bytes(buf[:KEY_SIZE]))
            if user is None:
                return NotTrojan("not a valid user")
            self.user = user
        try:
            request = parse_request(buf)
        except TrojanError as e:
            return Malformed(str(e))
        if request is NEED_DATA:
            return NEED_DATA
        r: Request = request  # type: ignore[assignment]
        leftover = bytes(buf[r.end:])
        self._buf = bytearray()
        return Accepted(self.user, r.command, r.destination, leftover)
