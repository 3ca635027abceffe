"""The ws layer's frame codec (vtwist.transport.ws.frames) against wsproto's ``Connection``,
which it replaces after the upgrade: the same bytes out, the same message bytes and the same
verdict (close code) for whatever comes in."""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, Pong, TextMessage

from vtwist.transport.ws.frames import (
    BINARY,
    CLOSE,
    DATA,
    ERROR,
    PING,
    PONG,
    FrameDecoder,
    close_frame,
    encode_frame,
)


def frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = b"\x01\x02\x03\x04",
          rsv: int = 0, length_form: int = 0) -> bytes:
    """A frame built by hand; ``length_form`` 2 or 8 forces a longer length field."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if mask is not None else 0
    if length_form == 8 or n >= 65536:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    elif length_form == 2 or n >= 126:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | n])
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ours(data: bytes, client: bool, pieces: int = 1) -> tuple[bytes, list[Any], Any]:
    """Message bytes, control events and the final verdict of our decoder."""
    decoder = FrameDecoder(client)
    events: list[tuple[int, Any]] = []
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        events += decoder.feed(data[i:i + step])
    body = b"".join(v for k, v in events if k == DATA)
    controls = [(k, v) for k, v in events if k in (PING, PONG)]
    verdict = next(((k, v[0]) for k, v in events if k in (CLOSE, ERROR)), None)
    return body, controls, verdict


def theirs(data: bytes, client: bool, pieces: int = 1) -> tuple[bytes, list[Any], Any]:
    """The same from wsproto (ERROR when it closes in state OPEN, as the layer read it)."""
    conn = Connection(ConnectionType.CLIENT if client else ConnectionType.SERVER)
    body = b""
    controls: list[Any] = []
    step = max(1, len(data) // pieces)
    for i in range(0, len(data), step):
        conn.receive_data(data[i:i + step])
        verdict = _drain(conn, controls)
        body += verdict[0]
        if verdict[1] is not None:
            return body, controls, verdict[1]
    return body, controls, None


def _drain(conn: Connection, controls: list[Any]) -> tuple[bytes, Any]:
    body = b""
    for event in conn.events():
        if isinstance(event, BytesMessage):
            body += bytes(event.data)
        elif isinstance(event, TextMessage):
            body += event.data.encode("utf-8")
        elif isinstance(event, Ping):
            controls.append((PING, bytes(event.payload)))
        elif isinstance(event, Pong):
            controls.append((PONG, bytes(event.payload)))
        elif isinstance(event, CloseConnection):
            kind = ERROR if conn.state is ConnectionState.OPEN else CLOSE
            return body, (kind, int(event.code))
    return body, None


class Encoding(SynchronousTestCase):
    def test_server_frames_are_wsproto_bytes(self) -> None:
        conn = Connection(ConnectionType.SERVER)
        for n in (0, 1, 125, 126, 65535, 65536, 200000):
            payload = os.urandom(n)
            self.assertEqual(encode_frame(BINARY, payload), conn.send(BytesMessage(data=payload)))
        self.assertEqual(close_frame(1000), conn.send(CloseConnection(code=1000)))
        self.assertEqual(close_frame(1005), b"\x88\x00")
        self.assertEqual(close_frame(1001, "bye"), b"\x88\x05\x03\xe9bye")

    def test_client_frames_decode_in_wsproto(self) -> None:
        server = Connection(ConnectionType.SERVER)
        payloads = [os.urandom(n) for n in (0, 3, 125, 126, 70000)]
        server.receive_data(b"".join(encode_frame(BINARY, p, os.urandom(4)) for p in payloads)
                            + encode_frame(PING, b"hi", os.urandom(4))
                            + close_frame(1000, "", os.urandom(4)))
        events = list(server.events())
        data = b"".join(bytes(e.data) for e in events if isinstance(e, Message))
        self.assertEqual(data, b"".join(payloads))
        self.assertIsInstance(events[-2], Ping)
        self.assertEqual(events[-1].code, 1000)


class Decoding(SynchronousTestCase):
    def test_vectors(self) -> None:
        """RFC 6455 5.7's examples."""
        self.assertEqual(FrameDecoder(client=True).feed(b"\x81\x05\x48\x65\x6c\x6c\x6f"),
                         [(DATA, b"Hello")])
        self.assertEqual(FrameDecoder(client=False).feed(
            b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), [(DATA, b"Hello")])
        self.assertEqual(FrameDecoder(client=True).feed(b"\x01\x03\x48\x65\x6c\x80\x02\x6c\x6f"),
                         [(DATA, b"Hel"), (DATA, b"lo")])
        self.assertEqual(FrameDecoder(client=False).feed(
            b"\x89\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"), [(PING, b"Hello")])

    def test_errors_match_wsproto(self) -> None:
        """Each refusal: our close code is wsproto's."""
        bad = {
            "rsv": frame(BINARY, b"x", rsv=4),
            "opcode 3": frame(3, b"x"),
            "opcode 11": frame(11, b""),
            "unmasked": frame(BINARY, b"abc", mask=None),
            "control too long": frame(PING, b"x" * 126),
            "fragmented control": frame(PING, b"x", fin=False),
            "lone continuation": frame(0, b"x"),
            "message in message": frame(BINARY, b"a", fin=False) + frame(BINARY, b"b"),
            "long form not minimal": frame(BINARY, b"x" * 10, length_form=2),
            "8-byte form not minimal": frame(BINARY, b"x" * 200, length_form=8),
            "top bit": b"\x82\xff\x80" + b"\x00" * 7 + os.urandom(4),
            "bad utf-8": frame(1, b"\xff\xfe"),
            "utf-8 cut at the end": frame(1, "é".encode()[:1]),
            "close 1 byte": frame(CLOSE, b"\x03"),
            "close 1005": frame(CLOSE, struct.pack("!H", 1005)),
            "close 999": frame(CLOSE, struct.pack("!H", 999)),
            "close 2000": frame(CLOSE, struct.pack("!H", 2000)),
            "close 5000": frame(CLOSE, struct.pack("!H", 5000)),
            "close reason utf-8": frame(CLOSE, struct.pack("!H", 1000) + b"\xff"),
        }
        for name, data in bad.items():
            mine = ours(data, client=False)
            self.assertEqual(mine[2][0], ERROR, name)  # type: ignore[index]
            self.assertEqual(mine, theirs(data, client=False), name)
        self.assertEqual(ours(frame(BINARY, b"x"), client=True)[2], (ERROR, 1002))

    def test_good_sequences_match_wsproto(self) -> None:
        good = (frame(1, "grüß".encode()) + frame(BINARY, b"abc", fin=False) + frame(PING, b"p")
                + frame(0, b"def", fin=False) + frame(0, b"") + frame(PONG, b"")
                + frame(BINARY, os.urandom(70000)) + frame(CLOSE, struct.pack("!H", 4000) + b"ok"))
        for pieces in (1, 7, len(good)):
            self.assertEqual(ours(good, False, pieces), theirs(good, False, pieces))

    def test_nothing_after_close(self) -> None:
        decoder = FrameDecoder(client=True)
        self.assertEqual(decoder.feed(b"\x88\x00\x82\x01x"), [(CLOSE, (1005, ""))])
        self.assertEqual(decoder.feed(b"\x82\x01x"), [])


_FRAMES = st.tuples(
    st.sampled_from([0, 1, 2, 3, 8, 9, 10, 15]), st.binary(max_size=140), st.booleans(),
    st.sampled_from([0, 0, 0, 1, 4]), st.sampled_from([0, 0, 2, 8]), st.booleans(),
    st.sampled_from([False, False, False, False, True]))


class Properties(SynchronousTestCase):
    @settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(_FRAMES, max_size=6), st.integers(1, 50), st.booleans())
    def test_same_as_wsproto(self, frames: list[tuple[Any, ...]], pieces: int,
                             client: bool) -> None:
        """Any sequence of (valid or broken) frames, in any number of pieces: the same
        message bytes, pings, pongs and verdict as wsproto."""
        data = b""
        for opcode, payload, fin, rsv, form, text_ok, masked in frames:
            if opcode == 1 and text_ok:
                payload = payload.decode("latin-1").encode("utf-8")
            if opcode == CLOSE and len(payload) >= 2 and text_ok:
                payload = struct.pack("!H", 1000 + payload[0] % 14) + b"reason"
            wrong = masked  # a mask where there must be none, or none where there must be one
            mask = os.urandom(4) if client == wrong else None
            data += frame(opcode, payload, fin, mask, rsv, form)
        self.assertEqual(ours(data, client, pieces), theirs(data, client, pieces))

    @settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300), st.booleans())
    def test_random_bytes(self, data: bytes, client: bool) -> None:
        decoder = FrameDecoder(client)
        for i in range(0, len(data), 17):
            for kind, _ in decoder.feed(data[i:i + 17]):
                self.assertIn(kind, (DATA, PING, PONG, CLOSE, ERROR))
