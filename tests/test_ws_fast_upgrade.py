"""The ws server's fast path for a plain upgrade answers with wsproto's exact bytes, and
leaves every request it does not call plain to wsproto (whose errors stay as they were); it
reads a plain request head as h11 would, and leaves every other one to h11."""

from __future__ import annotations

from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection
from wsproto.handshake import H11Handshake

from vtwist.transport.ws.http import accept_response, plain_upgrade, read_request_head

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
BASE = [(b"Host", b"example.com"), (b"User-Agent", b"Go-http-client/1.1"),
        (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", KEY),
        (b"Sec-WebSocket-Version", b"13"), (b"Upgrade", b"websocket")]


def parsed(headers: list[tuple[bytes, bytes]], target: bytes = b"/ws") -> h11.Request:
    raw = b"GET " + target + b" HTTP/1.1\r\n" + b"".join(
        k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def wsproto_answer(event: h11.Request) -> tuple[list[str], bytes]:
    handshake = H11Handshake(ConnectionType.SERVER)
    handshake.initiate_upgrade_connection(event.headers, event.target)
    request = next(handshake.events())
    subprotocol = request.subprotocols[0] if request.subprotocols else None
    return request.subprotocols, handshake.send(AcceptConnection(subprotocol=subprotocol))


class FastUpgradeTests(SynchronousTestCase):
    def test_same_bytes_as_wsproto(self) -> None:
        """Plain requests, with and without subprotocols (Xray's early data rides there),
        keep-alive in Connection, odd letter case: the answer is wsproto's, byte for byte."""
        variants = [
            BASE,
            [*BASE, (b"Sec-WebSocket-Protocol", b"chat, superchat")],
            [*BASE, (b"Sec-WebSocket-Protocol", b"AAAAAAAAAAA-_bbb")],
            [*BASE, (b"Sec-WebSocket-Protocol", b", x")],
            [(k, b"keep-alive, Upgrade" if k == b"Connection" else v) for k, v in BASE],
            [(k, b"Upgrade ,keep-alive" if k == b"Connection" else v) for k, v in BASE],
            [(k, b"close,,UPGRADE" if k == b"Connection" else v) for k, v in BASE],
            [(k.upper(), b"WebSocket" if k == b"Upgrade" else v) for k, v in BASE],
        ]
        for headers in variants:
            event = parsed(headers)
            offered = plain_upgrade(event.target, event.headers)
            self.assertIsNotNone(offered, headers)
            expected_offered, expected = wsproto_answer(event)
            self.assertEqual(offered, expected_offered)
            got = accept_response(KEY, offered[0] if offered else None)  # type: ignore[index]
            self.assertEqual(got, expected)

    def test_others_go_to_wsproto(self) -> None:
        """Anything unusual is wsproto's to judge (and to refuse with its own reason)."""
        def without(name: bytes) -> list[tuple[bytes, bytes]]:
            return [(k, v) for k, v in BASE if k.lower() != name]

        def replaced(name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
            return [(k, value if k.lower() == name else v) for k, v in BASE]

        refused = [
            without(b"connection"), without(b"sec-websocket-key"),
            without(b"sec-websocket-version"), without(b"upgrade"),
            replaced(b"connection", b"keep-alive"), replaced(b"sec-websocket-version", b"8"),
            replaced(b"connection", b"upgrades"), replaced(b"connection", b"up grade"),
            replaced(b"upgrade", b"h2c"),
            replaced(b"host", "bücher.de".encode()),
            [*BASE, (b"Sec-WebSocket-Key", KEY)],
            [*BASE, (b"Sec-WebSocket-Extensions", b"permessage-deflate")],
            [*BASE, (b"Sec-WebSocket-Protocol", b"a"), (b"Sec-WebSocket-Protocol", b"b")],
        ]
        for headers in refused:
            event = parsed(headers)
            self.assertIsNone(plain_upgrade(event.target, event.headers), headers)
        # (h11 refuses such a target itself; the check stands on its own anyway)
        self.assertIsNone(plain_upgrade("/wß".encode(), parsed(BASE).headers))


def h11_head(raw: bytes) -> Any:
    """What h11 reads from ``raw``: (method, target, headers, trailing), or an exception."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as e:
        return e
    if not isinstance(event, h11.Request):
        return event
    return event.method, event.target, list(event.headers), conn.trailing_data[0]


def request_bytes(headers: list[tuple[bytes, bytes]], target: bytes = b"/ws",
                  line: bytes | None = None, eol: bytes = b"\r\n") -> bytes:
    first = line if line is not None else b"GET " + target + b" HTTP/1.1"
    return eol.join([first, *(k + b": " + v for k, v in headers)]) + eol + eol


class RequestHeadTests(SynchronousTestCase):
    """The server reads a plain request head itself, exactly as h11 would, and leaves the rest
    to h11."""

    def test_plain_heads_read_as_h11_reads_them(self) -> None:
        for raw in [request_bytes(BASE) + b"\x82\x80\x00\x00\x00\x00",
                    request_bytes([(b"HOST", b"  h  "), (b"X-Empty", b""), (b"X-T", b"a\tb")]),
                    request_bytes(BASE, b"/ws?ed=2048&x=%20")]:
            self.assertEqual(read_request_head(raw), h11_head(raw), raw)

    def test_incomplete(self) -> None:
        raw = request_bytes(BASE)
        for cut in range(len(raw)):
            self.assertIsNone(read_request_head(raw[:cut]), cut)

    def test_unusual_heads_go_to_h11(self) -> None:
        for raw in [request_bytes(BASE, eol=b"\n"),
                    request_bytes([*BASE, (b"X-Folded", b"a\r\n b")]),
                    request_bytes(BASE, line=b"GET /ws HTTP/1.0"),
                    request_bytes(BASE, line=b"GET  /ws HTTP/1.1"),
                    request_bytes(BASE, line=b"G(T /ws HTTP/1.1"),
                    request_bytes([(k, v) for k, v in BASE if k != b"Host"]),
                    request_bytes([*BASE, (b"Host", b"other")]),
                    request_bytes([*BASE, (b"Content-Length", b"5")]),
                    request_bytes([*BASE, (b"Transfer-Encoding", b"chunked")]),
                    request_bytes([*BASE, (b"X-Bad", b"\x00")]),
                    request_bytes([*BASE, (b"X-Utf8", "ü".encode())]),
                    request_bytes([*BASE, (b"Bad Name", b"v")]),
                    b"\x16\x03\x01\x02\x00garbage\r\n\r\n"]:
            self.assertIs(read_request_head(raw), False, raw)

    @settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.sampled_from([b"Host", b"host", b"X-A", b"Upgrade", b"B@d",
                                               b"Content-Length", b""]),
                              st.binary(max_size=12)), max_size=6),
           st.sampled_from([b"GET /ws HTTP/1.1", b"POST /x?y HTTP/1.1", b"GET /ws HTTP/1.0",
                            b"GET /w s HTTP/1.1", b"GET\t/ws HTTP/1.1"]),
           st.binary(max_size=8))
    def test_same_as_h11(self, headers: list[tuple[bytes, bytes]], line: bytes,
                         tail: bytes) -> None:
        """Whatever it reads itself, it reads as h11 does; it never raises."""
        raw = request_bytes(headers, line=line) + tail
        head = read_request_head(raw)
        if head is not False and head is not None:
            self.assertEqual(head, h11_head(raw))
