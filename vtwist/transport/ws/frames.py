"""RFC 6455 framing for a WebSocket stream without extensions (sans-IO).

What the ws layer needs of wsproto's ``Connection`` after the upgrade, at a fraction of its
per-connection and per-message cost: :class:`FrameDecoder` turns received bytes into events
(message bytes as they arrive, pings, pongs, the peer's close, or a protocol error with the
close code to send), and :func:`encode_frame` / :func:`close_frame` build frames (masked by
the client). The rules are wsproto's: reserved bits, unknown opcodes, a continuation without
a message or a new message inside one, fragmented or oversized control frames, lengths not in
their shortest form or with the top bit set, a mask where there must be none (and the other
way round), an invalid close code and UTF-8 that is not, in text messages and close reasons.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any

from wsproto.frame_protocol import CloseReason

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: Event kinds besides the opcodes above: DATA (message bytes), ERROR ((code, reason)).
DATA, ERROR = -2, -1

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
NO_STATUS = 1005
#: Close codes a peer may send (wsproto's rule: its named codes but the local-only ones,
#: and 3000-4999).
_PEER_CODES = frozenset(int(c) for c in CloseReason) - {1005, 1006, 1015}

_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


_XOR = [bytes(a ^ b for a in range(256)) for b in range(256)]  # wsproto's tables


def _xor(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """``data`` XOR the 4-byte ``mask`` repeated, starting at mask byte ``offset``."""
    n = len(data)
    if not n:
        return b""
    if offset:
        mask = mask[offset:] + mask[:offset]
    if n < 512:  # one big-integer XOR is quicker for short payloads
        key = (mask * (n // 4 + 1))[:n]
        return (int.from_bytes(data, "little")
                ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    out = bytearray(data)
    for i in range(4):
        out[i::4] = out[i::4].translate(_XOR[mask[i]])
    return bytes(out)


def encode_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final frame; ``mask`` (4 random bytes) on the client's frames."""
    n = len(payload)
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((0x80 | opcode, bit | n))
    elif n < 65536:
        head = _SHORT.pack(0x80 | opcode, bit | 126, n)
    else:
        head = _LONG.pack(0x80 | opcode, bit | 127, n)
    if mask is None:
        return head + payload
    return head + mask + _xor(payload, mask)


def close_frame(code: int, reason: str = "", mask: bytes | None = None) -> bytes:
    """A close frame (no payload for 1005, "no status", as wsproto sends it)."""
    payload = b"" if code == NO_STATUS else struct.pack("!H", code) + reason.encode("utf-8")
    return encode_frame(CLOSE, payload[:125], mask)


class FrameDecoder:
    """Frames in, events out: ``[(kind, value), ...]`` with kind DATA (bytes), PING / PONG
    (payload), CLOSE ((code, reason)) or ERROR ((close code to send, reason)). Nothing is
    decoded after a CLOSE or an ERROR."""

    __slots__ = ("_client", "_buffer", "_remaining", "_mask", "_offset", "_fin", "_message",
                 "_utf8", "done")

    def __init__(self, client: bool) -> None:
        self._client = client  # the client refuses masked frames, the server unmasked ones
        self._buffer = b""
        self._remaining = 0  # payload bytes of the current data frame still to come
        self._mask: bytes | None = None
        self._offset = 0
        self._fin = True
        self._message: int | None = None  # TEXT or BINARY while a message is open
        self._utf8: Any = None
        self.done = False

    def feed(self, data: bytes) -> list[tuple[int, Any]]:
        """Decode what ``data`` completes."""
        if self.done:
            return []
        buf = self._buffer + data if self._buffer else data
        events: list[tuple[int, Any]] = []
        pos, end = 0, len(buf)
        while pos < end:
            if self._remaining:
                take = min(self._remaining, end - pos)
                chunk = buf[pos:pos + take]
                pos += take
                self._remaining -= take
                if self._mask is not None:
                    chunk = _xor(chunk, self._mask, self._offset)
                    self._offset = (self._offset + take) & 3
                if self._utf8 is not None:
                    chunk = self._text(chunk, events)
                    if chunk is None:
                        return events
                if chunk:
                    events.append((DATA, chunk))
                if not self._remaining and not self._frameDone(events):
                    return events
                continue
            if end - pos < 2:
                break
            b0, b1 = buf[pos], buf[pos + 1]
            length = b1 & 0x7F
            size = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if b1 & 0x80 else 0)
            if end - pos < size:
                break
            why = self._check(b0, b1)
            if why is not None:
                return self._error(events, PROTOCOL_ERROR, why)
            head = pos + 2
            if length == 126:
                length = int.from_bytes(buf[head:head + 2], "big")
                head += 2
                if length < 126:
                    return self._error(events, PROTOCOL_ERROR, "payload length not minimal")
            elif length == 127:
                length = int.from_bytes(buf[head:head + 8], "big")
                head += 8
                if length >> 63:
                    return self._error(events, PROTOCOL_ERROR, "payload length with top bit set")
                if length < 65536:
                    return self._error(events, PROTOCOL_ERROR, "payload length not minimal")
            mask = buf[head:head + 4] if b1 & 0x80 else None
            head += 4 if mask is not None else 0
            opcode = b0 & 0x0F
            if opcode >= 8:
                if length > 125:
                    return self._error(events, PROTOCOL_ERROR, "control frame longer than 125")
                if end - head < length:
                    break
                payload = buf[head:head + length]
                pos = head + length
                if mask is not None:
                    payload = _xor(payload, mask)
                if opcode == CLOSE:
                    return self._close(events, payload)
                events.append((opcode, payload))
                continue
            pos = head
            if opcode == CONTINUATION:
                if self._message is None:
                    return self._error(events, PROTOCOL_ERROR, "continuation without a message")
            elif self._message is not None:
                return self._error(events, PROTOCOL_ERROR, "new message inside a fragmented one")
            else:
                self._message = opcode
                if opcode == TEXT:
                    self._utf8 = codecs.getincrementaldecoder("utf-8")()
            self._fin = bool(b0 & 0x80)
            self._mask = mask
            self._offset = 0
            self._remaining = length
            if not length and not self._frameDone(events):
                return events
        self._buffer = buf[pos:] if pos < end else b""
        return events

    def _check(self, b0: int, b1: int) -> str | None:
        """Why a frame header is refused, or None."""
        if b0 & 0x70:
            return "reserved bits set"
        opcode = b0 & 0x0F
        if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
            return f"unknown opcode {opcode}"
        if opcode >= 8 and not b0 & 0x80:
            return "fragmented control frame"
        if bool(b1 & 0x80) == self._client:
            return "masked frame from the server" if self._client else "unmasked frame"
        return None

    def _frameDone(self, events: list[tuple[int, Any]]) -> bool:
        """A data frame ended; the message too if it was final. False after an error."""
        if self._fin:
            utf8, self._utf8 = self._utf8, None
            self._message = None
            if utf8 is not None:
                try:
                    utf8.decode(b"", True)
                except UnicodeDecodeError:
                    self._error(events, INVALID_DATA, "text message is not UTF-8")
                    return False
        return True

    def _text(self, chunk: bytes, events: list[tuple[int, Any]]) -> bytes | None:
        """The whole characters of ``chunk`` and what was held back before (a character cut
        between frames waits for its end, as in wsproto); None when it is not UTF-8."""
        held = self._utf8.getstate()[0]
        try:
            self._utf8.decode(chunk)
        except UnicodeDecodeError:
            self._error(events, INVALID_DATA, "text message is not UTF-8")
            return None
        chunk = held + chunk if held else chunk
        cut = len(self._utf8.getstate()[0])
        return chunk[:-cut] if cut else chunk

    def _close(self, events: list[tuple[int, Any]], payload: bytes) -> list[tuple[int, Any]]:
        if not payload:
            events.append((CLOSE, (NO_STATUS, "")))
        elif len(payload) == 1:
            return self._error(events, PROTOCOL_ERROR, "close frame with a 1-byte payload")
        else:
            code = int.from_bytes(payload[:2], "big")
            if code not in _PEER_CODES and not 3000 <= code <= 4999:
                return self._error(events, PROTOCOL_ERROR, f"close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                return self._error(events, INVALID_DATA, "close reason is not UTF-8")
            events.append((CLOSE, (code, reason)))
        self.done = True
        self._buffer = b""
        return events

    def _error(self, events: list[tuple[int, Any]], code: int,
               why: str) -> list[tuple[int, Any]]:
        events.append((ERROR, (code, why)))
        self.done = True
        self._buffer = b""
        return events
