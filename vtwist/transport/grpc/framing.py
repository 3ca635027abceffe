"""gRPC message framing and the gun tunnel's protobuf messages (sans-IO, no Twisted).

Reusable by anything that speaks gRPC over HTTP/2 (the gun transport, a gRPC API):

* the length-prefixed message: 1 byte compressed flag (0: plain), 4 bytes big-endian length,
  then the serialized message (gRPC over HTTP/2, "Length-Prefixed-Message");
  :func:`frame_message` builds one, :class:`MessageDecoder` splits a DATA stream into
  messages, however the bytes are cut;
* protobuf field helpers for the only wire types needed here: varint (type 0) and
  length-delimited (type 2); :func:`iter_fields` walks a message, skipping fields of the
  other wire types;
* the gun tunnel's messages (v2fly / Xray ``transport/internet/grpc/encoding/stream.proto``):
  ``Hunk { bytes data = 1; }`` and ``MultiHunk { repeated bytes data = 1; }``.

Example: ``frame_message(encode_hunk(b"hi")) == b"\\x00\\x00\\x00\\x00\\x04\\x0a\\x02hi"``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

#: gRPC's default largest received message (grpc-go ``defaultServerMaxReceiveMessageSize``).
DEFAULT_MAX_MESSAGE = 4 << 20

_PREFIX = struct.Struct(">BI")
PREFIX_SIZE = _PREFIX.size  # 5


class FramingError(ValueError):
    """The peer's bytes are not valid gRPC messages (or valid protobuf)."""


# -- the 5-byte gRPC prefix ----------------------------------------------------------------
def message_prefix(length: int, compressed: bool = False) -> bytes:
    """The 5-byte prefix of a message of ``length`` bytes."""
    return _PREFIX.pack(1 if compressed else 0, length)


def frame_message(message: bytes) -> bytes:
    """``message`` (a serialized protobuf) as one uncompressed gRPC length-prefixed message."""
    return _PREFIX.pack(0, len(message)) + message


class MessageDecoder:
    """Splits received bytes into gRPC messages.

    ``feed(data)`` returns the complete messages so far (serialized, without prefixes); a
    partial one waits for more bytes. Compressed messages (no ``grpc-encoding`` is ever
    negotiated here) and messages over ``max_message`` bytes raise :class:`FramingError`.
    ``pending`` is the number of bytes held for an incomplete message.
    """

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back (a prefix or message not yet complete)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every message now complete, in order."""
        buffer = self._buffer
        buffer += data
        out: list[bytes] = []
        offset = 0
        while len(buffer) - offset >= PREFIX_SIZE:
            flag, length = _PREFIX.unpack_from(buffer, offset)
            if flag != 0:
                raise FramingError("compressed gRPC message (no compression was negotiated)"
                                   if flag == 1 else f"bad gRPC message flag {flag}")
            if length > self.max_message:
                raise FramingError(f"gRPC message of {length} bytes "
                                   f"(larger than {self.max_message})")
            end = offset + PREFIX_SIZE + length
            if len(buffer) < end:
                break
            out.append(bytes(buffer[offset + PREFIX_SIZE:end]))
            offset = end
        if offset:
            del buffer[:offset]
        return out


# -- protobuf wire format (the parts needed here) --------------------------------------------
def encode_varint(value: int) -> bytes:
    """``value`` (>= 0) as a protobuf base-128 varint."""
    if value < 0:
        raise ValueError("varint must not be negative")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, offset: int) -> tuple[int, int]:
    """The varint at ``offset``: ``(value, offset after it)``; FramingError if cut or too long."""
    value = 0
    shift = 0
    while True:
        if offset >= len(data):
            raise FramingError("truncated protobuf varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7
        if shift >= 64:
            raise FramingError("protobuf varint longer than 10 bytes")


def encode_bytes_field(number: int, value: bytes) -> bytes:
    """A length-delimited field (wire type 2): key, length, ``value``."""
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


def iter_fields(message: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """``(field number, wire type, value)`` for each field of a serialized message.

    Varints (0) give an int, length-delimited fields (2) their bytes; fixed64 (1) and fixed32
    (5) are given as bytes too. Groups and bad keys raise FramingError.
    """
    view = memoryview(message)
    offset = 0
    end = len(view)
    while offset < end:
        key, offset = decode_varint(view, offset)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise FramingError("protobuf field number 0")
        if wire == 0:
            value, offset = decode_varint(view, offset)
            yield number, wire, value
        elif wire == 2:
            length, offset = decode_varint(view, offset)
            if offset + length > end:
                raise FramingError("truncated protobuf length-delimited field")
            yield number, wire, bytes(view[offset:offset + length])
            offset += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if offset + size > end:
                raise FramingError("truncated protobuf fixed-size field")
            yield number, wire, bytes(view[offset:offset + size])
            offset += size
        else:
            raise FramingError(f"unsupported protobuf wire type {wire}")


# -- the gun tunnel's messages ---------------------------------------------------------------
def encode_hunk(data: bytes) -> bytes:
    """``Hunk{data}`` serialized (empty ``data`` is the empty message, as proto3 writes it)."""
    return encode_bytes_field(1, data) if data else b""


def decode_hunk(message: bytes) -> bytes:
    """The ``data`` of a serialized ``Hunk`` (the last one if repeated; unknown fields
    skipped)."""
    data = b""
    for number, wire, value in iter_fields(message):
        if number == 1:
            if wire != 2:
                raise FramingError(f"Hunk.data has wire type {wire}, not 2")
            data = value  # type: ignore[assignment]
    return data


def encode_multi_hunk(chunks: Iterable[bytes]) -> bytes:
    """``MultiHunk{data: chunks}`` serialized (each chunk one ``data`` entry)."""
    return b"".join(encode_bytes_field(1, chunk) for chunk in chunks)


def decode_multi_hunk(message: bytes) -> list[bytes]:
    """The ``data`` entries of a serialized ``MultiHunk`` (unknown fields skipped)."""
    out: list[bytes] = []
    for number, wire, value in iter_fields(message):
        if number == 1:
            if wire != 2:
                raise FramingError(f"MultiHunk.data has wire type {wire}, not 2")
            out.append(value)  # type: ignore[arg-type]
    return out


def hunk_message(data: bytes) -> bytes:
    """One framed gRPC message carrying ``Hunk{data}`` (what a gun ``Tun`` stream sends)."""
    body = encode_hunk(data)
    return _PREFIX.pack(0, len(body)) + body


def multi_hunk_message(chunks: Iterable[bytes]) -> bytes:
    """One framed gRPC message carrying ``MultiHunk{data: chunks}`` (``TunMulti``)."""
    return frame_message(encode_multi_hunk(chunks))
