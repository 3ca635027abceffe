"""The VLESS wire format of V2Ray 4.34 (sans-IO).

Request: version (0), the 16-byte UUID, the addons (one length byte, then a protobuf
``Addons{string Flow = 1; bytes Seed = 2}``), the command (1 TCP, 2 UDP, 3 Mux), then for
TCP and UDP the port (2 bytes, big-endian) and the address (1 IPv4, 2 domain, 3 IPv6).
Response: version and an addons length (4.34 always writes 0). Over a UDP request each
datagram travels as a 2-byte big-endian length and the payload.

:class:`RequestParser` decodes a request from bytes as they come; a request whose version or
UUID is wrong is :class:`Invalid` with ``fallback`` set (4.34 hands those to a fallback), a
later error is :class:`Invalid` without it.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vtwist.address import Destination, normalize_host
from vtwist.sansio import NEED_DATA, Event
from vtwist.transport.grpc.framing import FramingError, encode_bytes_field, iter_fields

VERSION = 0
CMD_TCP = 1
CMD_UDP = 2
CMD_MUX = 3
ATYP_IPV4 = 1
ATYP_DOMAIN = 2
ATYP_IPV6 = 3
#: The largest datagram the UDP framing carries (4.34 drops bigger ones: 2 + n > 2048).
MAX_PACKET = 2046
#: The destination 4.34 gives a Mux request.
MUX_DESTINATION = Destination.tcp("v1.mux.cool", 0)

_DOMAIN_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


class VLESSError(ValueError):
    """Bytes that are not VLESS."""


@dataclass(frozen=True)
class Addons:
    """The request/response addons (4.34 sends none, reads ``Flow`` and ``Seed``)."""

    flow: str = ""
    seed: bytes = b""


# -- protobuf (the two fields of Addons; unknown fields skipped) -----------------------------
def decode_addons(data: bytes) -> Addons:
    """The protobuf ``Addons`` message; unknown fields are skipped, malformed input raises."""
    flow, seed = "", b""
    try:
        fields = list(iter_fields(data))
    except FramingError as e:
        raise VLESSError(f"{e} in addons") from None
    for number, wire, value in fields:
        if wire != 2:
            continue
        if number == 1:
            try:
                flow = value.decode("utf-8")  # type: ignore[union-attr]
            except UnicodeDecodeError:
                raise VLESSError("addons Flow is not UTF-8") from None
        elif number == 2:
            seed = value  # type: ignore[assignment]
    return Addons(flow, seed)


def encode_addons(addons: Addons | None) -> bytes:
    """The protobuf bytes of ``addons`` (empty for none or default addons)."""
    if addons is None:
        return b""
    out = b""
    if addons.flow:
        out += encode_bytes_field(1, addons.flow.encode("utf-8"))
    if addons.seed:
        out += encode_bytes_field(2, addons.seed)
    return out


# -- addresses ----------------------------------------------------------------------------
def encode_address(dest: Destination) -> bytes:
    """Port, then type and address (VLESS's order and type numbers)."""
    port = struct.pack(">H", dest.port)
    ip = dest.ip
    if isinstance(ip, ipaddress.IPv4Address):
        return port + bytes([ATYP_IPV4]) + ip.packed
    if isinstance(ip, ipaddress.IPv6Address):
        return port + bytes([ATYP_IPV6]) + ip.packed
    host = dest.host.encode("ascii")
    if not 0 < len(host) <= 255:
        raise ValueError("a domain must be 1 to 255 bytes")
    return port + bytes([ATYP_DOMAIN, len(host)]) + host


def _decode_address(buf: bytes, pos: int, network: str) -> tuple[Destination, int] | Any:
    """(destination, end) from ``buf[pos:]``, NEED_DATA, or VLESSError."""
    if len(buf) < pos + 3:
        return NEED_DATA
    port = (buf[pos] << 8) | buf[pos + 1]
    atyp = buf[pos + 2]
    pos += 3
    if atyp == ATYP_IPV4:
        if len(buf) < pos + 4:
            return NEED_DATA
        host = str(ipaddress.IPv4Address(bytes(buf[pos:pos + 4])))
        pos += 4
    elif atyp == ATYP_IPV6:
        if len(buf) < pos + 16:
            return NEED_DATA
        host = normalize_host(str(ipaddress.IPv6Address(bytes(buf[pos:pos + 16]))))
        pos += 16
    elif atyp == ATYP_DOMAIN:
        if len(buf) < pos + 1:
            return NEED_DATA
        n = buf[pos]
        if len(buf) < pos + 1 + n:
            return NEED_DATA
        raw = bytes(buf[pos + 1:pos + 1 + n])
        pos += 1 + n
        if not raw:
            raise VLESSError("empty domain")
        text = raw.decode("latin-1")
        if _is_ip(text):  # 4.34 reads an IP literal sent as a domain as the IP
            host = normalize_host(text)
        elif set(raw) <= _DOMAIN_CHARS:
            host = text
        else:
            raise VLESSError(f"invalid domain name {text!r}")
    else:
        raise VLESSError(f"unknown address type {atyp}")
    return Destination(network, host, port), pos  # type: ignore[arg-type]


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


# -- requests -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Request(Event):
    """A decoded request; ``leftover`` is the payload that followed it."""

    uuid: bytes
    command: int
    destination: Destination
    addons: Addons = field(default_factory=Addons)
    account: Any = None
    leftover: bytes = b""


@dataclass(frozen=True)
class Invalid(Event):
    """Not a VLESS request; ``fallback``: the version or UUID was wrong (4.34 falls back)."""

    reason: str
    fallback: bool


def encode_request(uuid: bytes, command: int, destination: Destination | None,
                   addons: Addons | None = None) -> bytes:
    """The request header (version 0); ``destination`` is ignored for Mux."""
    if len(uuid) != 16:
        raise ValueError("a VLESS id is 16 bytes")
    extra = encode_addons(addons)
    if len(extra) > 255:
        raise ValueError("addons longer than 255 bytes")
    parts = [bytes([VERSION]), uuid, bytes([len(extra)]), extra, bytes([command])]
    if command != CMD_MUX:
        if destination is None:
            raise ValueError("a TCP or UDP request needs a destination")
        parts.append(encode_address(destination))
    return b"".join(parts)


class RequestParser:
    """Decodes one request from the bytes of a connection, as they arrive.

    ``lookup(uuid)`` gives the account of a known UUID, or None.
    """

    def __init__(self, lookup: Callable[[bytes], Any]) -> None:
        self.lookup = lookup
        self.buf = bytearray()
        self.account: Any = None

    @property
    def buffered(self) -> int:
        """Bytes held so far."""
        return len(self.buf)

    def feed(self, data: bytes) -> Request | Invalid | Any:
        """A :class:`Request`, an :class:`Invalid`, or NEED_DATA."""
        buf = self.buf
        buf += data
        if not buf:
            return NEED_DATA
        if buf[0] != VERSION:
            return Invalid(f"invalid request version {buf[0]}", True)
        if len(buf) < 17:
            return NEED_DATA
        if self.account is None:
            uuid = bytes(buf[1:17])
            self.account = self.lookup(uuid)
            if self.account is None:
                return Invalid("invalid request user id", True)
        if len(buf) < 18:
            return NEED_DATA
        n = buf[17]
        end = 18 + n
        if len(buf) < end + 1:
            return NEED_DATA
        try:
            addons = decode_addons(bytes(buf[18:end])) if n else Addons()
        except VLESSError as e:
            return Invalid(f"failed to decode request header addons: {e}", False)
        command = buf[end]
        pos = end + 1
        if command == CMD_MUX:
            destination = MUX_DESTINATION
        elif command in (CMD_TCP, CMD_UDP):
            try:
                got = _decode_address(buf, pos, "tcp" if command == CMD_TCP else "udp")
            except (VLESSError, ValueError) as e:
                return Invalid(f"invalid request address: {e}", False)
            if got is NEED_DATA:
                return NEED_DATA
            destination, pos = got
        else:
            return Invalid(f"invalid request command {command}", False)
        leftover = bytes(buf[pos:])
        return Request(bytes(buf[1:17]), command, destination, addons, self.account, leftover)


# -- responses ----------------------------------------------------------------------------
def encode_response(addons: Addons | None = None) -> bytes:
    """Version and addons (4.34: ``b"\\x00\\x00"``)."""
    extra = encode_addons(addons)
    return bytes([VERSION, len(extra)]) + extra


class ResponseParser:
    """Reads the response header; :meth:`feed` gives (addons, leftover) or NEED_DATA."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> tuple[Addons, bytes] | Any:
        """Raises VLESSError on a wrong version or malformed addons."""
        buf = self.buf
        buf += data
        if not buf:
            return NEED_DATA
        if buf[0] != VERSION:
            raise VLESSError(f"unexpected response version {buf[0]}")
        if len(buf) < 2:
            return NEED_DATA
        end = 2 + buf[1]
        if len(buf) < end:
            return NEED_DATA
        addons = decode_addons(bytes(buf[2:end])) if buf[1] else Addons()
        return addons, bytes(buf[end:])


# -- UDP framing --------------------------------------------------------------------------
def encode_packet(payload: bytes) -> bytes:
    """One datagram as 4.34 writes it (length, payload); b"" for an empty or too large one,
    which 4.34 drops."""
    n = len(payload)
    if n == 0 or n > MAX_PACKET:
        return b""
    return struct.pack(">H", n) + payload


class PacketDecoder:
    """Splits the length-prefixed datagrams of a VLESS UDP stream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    @property
    def at_boundary(self) -> bool:
        """True when no partial datagram is held."""
        return not self.buf

    def feed(self, data: bytes) -> list[bytes]:
        """The complete datagrams so far (a zero-length frame yields an empty datagram,
        which the caller drops)."""
        buf = self.buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            length = (buf[pos] << 8) | buf[pos + 1]
            if n - pos - 2 < length:
                break
            out.append(bytes(buf[pos + 2:pos + 2 + length]))
            pos += 2 + length
        if pos:
            del buf[:pos]
        return out
