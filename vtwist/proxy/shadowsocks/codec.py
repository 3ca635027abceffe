"""The Shadowsocks request, sans-IO: the address at the start of a stream, UDP packets.

A TCP stream's plaintext starts with a SOCKS-style address (ATYP, address, BE16 port),
then the payload. Each UDP packet's plaintext is an address then one datagram. The server
reads only the low four bits of ATYP (V2Ray 4.34 masks the old one-time-auth flag away):
1 IPv4, 3 domain, 4 IPv6.

:class:`ServerHandshake` reads a client's first bytes: salt, first chunks, address. It
answers :class:`Accepted` (destination, the payload already decoded, the stream decoder to
go on with) or :class:`Refused` (why), never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.address import Destination
from vtwist.proxy.shadowsocks.aead import (
    Account,
    CipherError,
    StreamDecoder,
    StreamEncoder,
    open_packet,
    seal_packet,
)
from vtwist.proxy.shadowsocks.replay import SaltFilter
from vtwist.proxy.socks.codec import AddressError
from vtwist.proxy.socks.codec import decode_address as _socks_address
from vtwist.proxy.socks.codec import encode_address as _encode
from vtwist.sansio import NEED_DATA, Event, NeedData

#: The longest address: ATYP, length, 255-byte domain, port.
MAX_ADDRESS = 1 + 1 + 255 + 2


class RequestError(Exception):
    """A request that cannot be read (bad address, bad packet)."""


def encode_address(destination: Destination) -> bytes:
    """The SOCKS-style address of ``destination``; ValueError when it cannot be framed."""
    return _encode(destination.host, destination.port)


def decode_address(data: bytes | bytearray | memoryview
                   ) -> tuple[str, int, int] | NeedData:
    """``(host, port, end)`` of the address at the start of ``data``, or NEED_DATA.

    ATYP's high four bits are ignored, as in V2Ray 4.34. Raises :class:`RequestError`.
    """
    if not len(data):
        return NEED_DATA
    head = data[0]
    if head & 0xF0:
        data = bytes((head & 0x0F,)) + bytes(data[1:MAX_ADDRESS])
    try:
        return _socks_address(data)
    except AddressError as e:
        raise RequestError(str(e)) from None


@dataclass
class Accepted(Event):
    """A good request: where to, what payload came with it, and the decoder to go on."""

    host: str
    port: int
    early: list[bytes]
    decoder: StreamDecoder
    salt: bytes = b""


@dataclass
class Refused(Event):
    """A request the server never answers, and why."""

    reason: str


class ServerHandshake:
    """Reads one client's salt, first chunks and address.

    ``salts`` (the inbound's :class:`SaltFilter`) refuses a salt seen before as if its tag
    were bad; a salt is remembered once its first chunk authenticates.
    """

    def __init__(self, account: Account, salts: SaltFilter | None = None) -> None:
        self.decoder = StreamDecoder(account)
        self.salts = salts
        self._plain = bytearray()
        self._checked = not account.method.is_aead

    @property
    def buffered(self) -> int:
        """Bytes read so far and not yet decided on."""
        return self.decoder.buffered + len(self._plain)

    def feed(self, data: bytes | bytearray | memoryview) -> Accepted | Refused | NeedData:
        """Take more bytes from the client."""
        decoder = self.decoder
        try:
            payloads = decoder.feed(data)
        except CipherError as e:
            return Refused(str(e))
        if not self._checked and decoder.chunks:
            self._checked = True
            if self.salts is not None and not self.salts.check(decoder.salt):  # type: ignore[arg-type]
                return Refused("replayed salt")
        if decoder.eof:
            return Refused("stream ended before the address")
        for p in payloads:
            self._plain += p
        try:
            got = decode_address(self._plain)
        except RequestError as e:
            return Refused(str(e))
        if got is NEED_DATA:
            if len(self._plain) >= MAX_ADDRESS:  # pragma: no cover - decode decides first
                return Refused("no address")
            return NEED_DATA
        host, port, end = got  # type: ignore[misc]
        rest = bytes(self._plain[end:])
        self._plain = bytearray()
        return Accepted(host, port, [rest] if rest else [], decoder, decoder.salt or b"")


@dataclass
class ClientStream:
    """The client's side of one stream: the address rides in the first chunk."""

    account: Account
    destination: Destination
    encoder: StreamEncoder = field(init=False)
    _header: bytes | None = field(init=False)

    def __post_init__(self) -> None:
        self._header = encode_address(self.destination)
        self.encoder = StreamEncoder(self.account)

    @property
    def header_sent(self) -> bool:
        """True once the address went out."""
        return self._header is None

    def encode(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Wire pieces for ``data`` (with the salt and address if they have not gone)."""
        header = self._header
        if header is not None:
            self._header = None
            return self.encoder.encode(header + bytes(data))
        return self.encoder.encode(data)


def encode_packet(account: Account, destination: Destination, payload: bytes,
                  salt: bytes | None = None) -> bytes:
    """One UDP packet carrying ``payload`` for (or from) ``destination``."""
    return seal_packet(account, encode_address(destination) + payload, salt)


@dataclass
class Packet(Event):
    """A decoded UDP packet."""

    host: str
    port: int
    payload: bytes
    salt: bytes


def decode_packet(account: Account, packet: bytes) -> Packet:
    """Open one UDP packet; raises :class:`RequestError`."""
    try:
        salt, plain = open_packet(account, packet)
    except CipherError as e:
        raise RequestError(str(e)) from None
    got = decode_address(plain)
    if got is NEED_DATA:
        raise RequestError("packet too short for its address")
    host, port, end = got  # type: ignore[misc]
    return Packet(host, port, plain[end:], salt)
