"""The ws server's fast path for a plain upgrade answers with wsproto's exact bytes, and
leaves every request it does not call plain to wsproto (whose errors stay as they were); it
reads a plain request head as h11 would, and leaves every other one to h11."""

from __future__ import annotations

from typing import Any

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection
from wsproto.handshake import H11Handshake

from vtwist.testing.doubles import Recorder
from vtwist.transport.ws import layer as ws_layer
from vtwist.transport.ws.http import (
    accept_response,
    plain_upgrade,
    read_request_head,
    usual_upgrade,
)
from vtwist.transport.ws.layer import WSServerLayer
from vtwist.transport.ws.settings import WSSettings

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


# -- the server's one-pass path for the usual request (usual_upgrade + _upgradeUsual) ------
GO_REQUEST = [(b"Host", b"example.com"), (b"User-Agent", b"Go-http-client/1.1"),
              (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", KEY),
              (b"Sec-WebSocket-Version", b"13"), (b"Upgrade", b"websocket")]
VTWIST_REQUEST = [(b"Host", b"example.com:8443"), (b"Upgrade", b"websocket"),
                  (b"Connection", b"Upgrade"), (b"Sec-WebSocket-Key", KEY),
                  (b"Sec-WebSocket-Version", b"13")]
EARLY = b"AQIDBAUGBwgJCgsMDQ4P"  # base64url of bytes 1..15
FRAME = b"\x82\x83\x01\x02\x03\x04\x00\x00\x00"  # a masked 3-byte binary message


def served(raw: bytes, settings: WSSettings, usual: bool,
           pieces: int = 1) -> tuple[bytes, list[bytes], Any, bool, list[str]]:
    """Feed ``raw`` (in ``pieces`` parts) to a ws server layer: (what it wrote, without the
    Date line; what each application received; getPeer(); closing?; which path read it)."""
    paths: list[str] = []
    real_usual, real_head = ws_layer.usual_upgrade, ws_layer.read_request_head

    def usual_upgrade(data: bytes) -> Any:
        found = real_usual(data) if usual else None
        if found is not None:
            paths.append("usual")
        return found

    def read_request_head(data: bytes) -> Any:
        paths.append("full")
        return real_head(data)

    ws_layer.usual_upgrade, ws_layer.read_request_head = usual_upgrade, read_request_head
    try:
        apps: list[Recorder] = []
        factory = Factory()
        factory.buildProtocol = lambda addr: apps.append(Recorder()) or apps[-1]  # type: ignore
        layer = WSServerLayer(factory, settings, Clock())
        wire = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5000))
        layer.makeConnection(wire)
        step = -(-len(raw) // pieces)
        for at in range(0, len(raw), step):
            layer.dataReceived(raw[at:at + step])
    finally:
        ws_layer.usual_upgrade, ws_layer.read_request_head = real_usual, real_head
    written = b"\r\n".join(line for line in wire.value().split(b"\r\n")
                           if not line.startswith(b"Date: "))
    return (written, [bytes(a.data) for a in apps], layer.getPeer(), wire.disconnecting,
            paths)


class UsualUpgradeTests(SynchronousTestCase):
    """The usual request is read and answered in one pass, with the full path's answer;
    every other request goes to the full path (read_request_head, plain_upgrade, h11,
    wsproto), which answers it as before."""

    def assertSameAsFullPath(self, raw: bytes, settings: WSSettings, path: str) -> None:
        for pieces in (1, 3):
            fast = served(raw, settings, True, pieces)
            full = served(raw, settings, False, pieces)
            self.assertEqual(fast[:4], full[:4], (raw, pieces))
            self.assertEqual(fast[4][-1:], [path], (raw, pieces))
            if path == "usual" and pieces == 1:  # (an incomplete head waits in the full path)
                self.assertNotIn("full", fast[4], raw)

    def test_usual_requests_answered_in_one_pass(self) -> None:
        """V2Ray's (Go's) and vtwist's requests, a subprotocol offer (Xray's early data),
        X-Forwarded-For, spaces around values, other letter cases, keep-alive in Connection,
        frames right after the head: the fast path answers each as the full path does."""
        plain = WSSettings(path="/ws")
        named = WSSettings(path="/ws", max_early_data=2048, early_data_header="X-Ed")
        cases = [
            (request_bytes(GO_REQUEST), plain),
            (request_bytes(VTWIST_REQUEST), plain),
            (request_bytes(VTWIST_REQUEST) + FRAME, plain),
            (request_bytes([*GO_REQUEST, (b"Sec-WebSocket-Protocol", EARLY)]) + FRAME, plain),
            (request_bytes([*GO_REQUEST, (b"Sec-WebSocket-Protocol", b"chat, superchat")]),
             plain),
            (request_bytes([*GO_REQUEST, (b"X-Forwarded-For", b"203.0.113.9, 10.0.0.2")]),
             plain),
            (request_bytes([*GO_REQUEST, (b"X-Forwarded-For", b"not an address")]), plain),
            (request_bytes([*VTWIST_REQUEST, (b"X-Ed", EARLY)]), named),
            (request_bytes([*VTWIST_REQUEST, (b"X-Ed", EARLY),
                            (b"Sec-WebSocket-Protocol", b"x")]), named),
            (request_bytes([(k, b"  " + v + b" ") for k, v in GO_REQUEST]), plain),
            (request_bytes([(k.upper(), v) for k, v in GO_REQUEST]), plain),
            (request_bytes([(k, b"keep-alive, Upgrade" if k == b"Connection" else
                             b"WebSocket" if k == b"Upgrade" else v) for k, v in GO_REQUEST]),
             plain),
            (request_bytes([*GO_REQUEST, (b"X-Empty", b"")]), plain),
        ]
        for raw, ws in cases:
            self.assertIsNotNone(usual_upgrade(raw), raw)
            self.assertSameAsFullPath(raw, ws, "usual")
        answer, received, peer, closing, _ = served(
            request_bytes([*GO_REQUEST, (b"Sec-WebSocket-Protocol", EARLY),
                           (b"X-Forwarded-For", b"203.0.113.9")]) + FRAME, plain, True)
        self.assertTrue(answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\n"), answer)
        self.assertIn(b"\r\nSec-WebSocket-Protocol: " + EARLY + b"\r\n", answer)
        self.assertEqual(received, [bytes(range(1, 16)) + b"\x01\x02\x03"])
        self.assertEqual((peer.host, peer.port), ("203.0.113.9", 0))
        self.assertFalse(closing)

    def test_fields_as_the_full_path_reads_them(self) -> None:
        raw = request_bytes([(k, b" " + v + b"  ") for k, v in GO_REQUEST]) + FRAME
        target, fields, leftover = usual_upgrade(raw)  # type: ignore[misc]
        method, full_target, headers, full_leftover = read_request_head(raw)  # type: ignore
        self.assertEqual((b"GET", target, leftover), (method, full_target, full_leftover))
        self.assertEqual(fields, dict(headers))

    def test_other_requests_take_the_full_path(self) -> None:
        """A query, an escape, another path (404), another method (405), a tab, a header
        twice, a missing or wrong upgrade header, extensions, a body, bare LF, HTTP/1.0, a
        bad key, a Host that is not IDNA, early data after the path: the full path reads
        each, and answers as before."""
        plain = WSSettings(path="/ws")
        early_path = WSSettings(path="/ws", max_early_data=2048)

        def without(name: bytes) -> list[tuple[bytes, bytes]]:
            return [(k, v) for k, v in GO_REQUEST if k.lower() != name]

        def replaced(name: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
            return [(k, value if k.lower() == name else v) for k, v in GO_REQUEST]

        fast_declines = [  # usual_upgrade reads these; the layer hands them on
            (request_bytes(GO_REQUEST, b"/ws?ed=2048"), plain),
            (request_bytes(GO_REQUEST, b"/w%73"), plain),
            (request_bytes(GO_REQUEST, b"/w%73"), WSSettings(path="/w%73")),
            (request_bytes(GO_REQUEST, b"/other"), plain),
            (request_bytes(GO_REQUEST, b"/ws" + EARLY), early_path),
            (request_bytes(replaced(b"sec-websocket-key", b"short")), plain),
        ]
        not_usual = [
            (request_bytes(GO_REQUEST, line=b"POST /ws HTTP/1.1"), plain),
            (request_bytes(GO_REQUEST, line=b"GET /ws HTTP/1.0"), plain),
            (request_bytes(GO_REQUEST, eol=b"\n"), plain),
            (request_bytes([*GO_REQUEST, (b"X-Tab", b"a\tb")]), plain),
            (request_bytes([*GO_REQUEST, (b"X-Forwarded-For", b"203.0.113.9")]
                           + [(b"X-Forwarded-For", b"203.0.113.10")]), plain),
            (request_bytes([*GO_REQUEST, (b"Host", b"other")]), plain),
            (request_bytes([*GO_REQUEST, (b"Sec-WebSocket-Key", KEY)]), plain),
            (request_bytes(without(b"host")), plain),
            (request_bytes(without(b"sec-websocket-key")), plain),
            (request_bytes(without(b"sec-websocket-version")), plain),
            (request_bytes(without(b"connection")), plain),
            (request_bytes(without(b"upgrade")), plain),
            (request_bytes(replaced(b"sec-websocket-version", b"8")), plain),
            (request_bytes(replaced(b"upgrade", b"h2c")), plain),
            (request_bytes(replaced(b"connection", b"keep-alive")), plain),
            (request_bytes(replaced(b"host", b"xn--zz.example")), plain),
            (request_bytes([*GO_REQUEST, (b"Sec-WebSocket-Extensions", b"x")]), plain),
            (request_bytes([*GO_REQUEST, (b"Content-Length", b"3")]) + b"abc", plain),
            (request_bytes([*GO_REQUEST, (b"X-Utf8", "ü".encode())]), plain),
            (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", plain),
        ]
        for raw, ws in fast_declines:
            self.assertIsNotNone(usual_upgrade(raw), raw)
            self.assertSameAsFullPath(raw, ws, "full")
        for raw, ws in not_usual:
            self.assertIsNone(usual_upgrade(raw), raw)
            self.assertSameAsFullPath(raw, ws, "full")
        # the answers are still the full path's own: 404, 405, 400 and an early-data 101
        self.assertTrue(served(request_bytes(GO_REQUEST, b"/other"), plain, True)[0]
                        .startswith(b"HTTP/1.1 404 "))
        self.assertTrue(served(request_bytes(GO_REQUEST, line=b"POST /ws HTTP/1.1"), plain,
                               True)[0].startswith(b"HTTP/1.1 405 "))
        self.assertTrue(served(request_bytes(without(b"sec-websocket-key")), plain, True)[0]
                        .startswith(b"HTTP/1.1 400 "))
        self.assertEqual(served(request_bytes(GO_REQUEST, b"/ws" + EARLY), early_path,
                                True)[1], [bytes(range(1, 16))])

    def test_incomplete_head_waits(self) -> None:
        raw = request_bytes(GO_REQUEST)
        for cut in range(len(raw)):
            self.assertIsNone(usual_upgrade(raw[:cut]), cut)
        answer, received, _, closing, paths = served(raw + FRAME, WSSettings(path="/ws"),
                                                     True, pieces=len(raw) + len(FRAME))
        self.assertTrue(answer.startswith(b"HTTP/1.1 101 "))
        self.assertEqual((received, closing), ([b"\x01\x02\x03"], False))
        self.assertEqual(paths[-1], "usual")
