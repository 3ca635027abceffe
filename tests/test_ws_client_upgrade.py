"""The ws client's hand-built upgrade: the request is wsproto's bytes, and every answer that is
not a proper 101 for our key (and our early data) fails the connection cleanly."""

from __future__ import annotations

import base64
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from wsproto import handshake as wsproto_handshake
from wsproto.connection import ConnectionType
from wsproto.events import Request
from wsproto.utilities import generate_accept_token

from vtwist.testing.doubles import Recorder
from vtwist.transport.layer import LayerHandshakeError
from vtwist.transport.ws.client_upgrade import (
    MAX_RESPONSE_BYTES,
    Accepted,
    Refused,
    read_upgrade_response,
    request_around_key,
    upgrade_request,
)
from vtwist.transport.ws.http import accept_token
from vtwist.transport.ws.layer import WSClientLayer
from vtwist.transport.ws.settings import WSSettings

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455's example
GORILLA_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\n\r\n")


def wsproto_request(target: str, host: str, headers: list[tuple[str, str]],
                    protocol: str | None, key: bytes = KEY) -> bytes:
    """What wsproto's client handshake sends, with ``key`` as its nonce."""
    original = wsproto_handshake.generate_nonce
    wsproto_handshake.generate_nonce = lambda: key  # type: ignore[assignment]
    try:
        shake = wsproto_handshake.H11Handshake(ConnectionType.CLIENT)
        return shake.send(Request(
            host=host, target=target, subprotocols=[protocol] if protocol else [],
            extra_headers=[(k.encode(), v.encode()) for k, v in headers]))
    finally:
        wsproto_handshake.generate_nonce = original  # type: ignore[assignment]


def response(*lines: bytes, status: bytes = b"HTTP/1.1 101 Switching Protocols") -> bytes:
    return b"\r\n".join([status, *lines]) + b"\r\n\r\n"


GOOD = [b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + ACCEPT]


class RequestVectors(SynchronousTestCase):
    def test_literal_vector(self) -> None:
        """The exact bytes, with early data offered in Sec-WebSocket-Protocol."""
        self.assertEqual(
            upgrade_request("/ws", "cdn.example", KEY, [("User-Agent", "Go-http-client/1.1")],
                            "aGVsbG8"),
            b"GET /ws HTTP/1.1\r\nHost: cdn.example\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: aGVsbG8\r\n"
            b"User-Agent: Go-http-client/1.1\r\n\r\n")

    def test_same_bytes_as_wsproto(self) -> None:
        """Byte for byte what the wsproto handshake it replaces sent."""
        cases: list[tuple[str, str, list[tuple[str, str]], str | None]] = [
            ("/", "example.test:8443", [], None),
            ("/ws?x=1", "example.test", [("User-Agent", "vtwist"), ("X-A", "b c")], None),
            ("/wsaGVsbG8", "[::1]:8080", [], None),
            ("/ws", "10.0.0.1:443", [("X-Early", "aGVsbG8")], None),
            ("/ws", "example.test", [("Pragma", "no-cache")], "MDEyMzQ1Njc"),
            ("/ws", "bücher.example", [], None),
        ]
        for target, host, headers, protocol in cases:
            self.assertEqual(upgrade_request(target, host, KEY, headers, protocol),
                             wsproto_request(target, host, headers, protocol), target)

    def test_request_around_key(self) -> None:
        """The request built once per target, host and headers is the same request around
        each new key; what cannot be sent raises ValueError each time."""
        cases: list[tuple[str, str, list[tuple[str, str]]]] = [
            ("/", "example.test:8443", []),
            ("/ws?x=1", "example.test", [("User-Agent", "vtwist"), ("X-A", "b c")]),
            ("/ws", "bücher.example", []),
        ]
        for _ in range(2):
            for target, host, headers in cases:
                for key in (KEY, b"AAAAAAAAAAAAAAAAAAAAAA=="):
                    head, tail = request_around_key(target, host, headers)
                    self.assertEqual(head + key + tail,
                                     wsproto_request(target, host, headers, None, key))
        for _ in range(2):
            with self.assertRaises(ValueError):
                request_around_key("/", "h", [("X-A", "v\r\nInjected: 1")])

    def test_accept_token(self) -> None:
        """wsproto's accept token (RFC 6455's example, and random keys)."""
        self.assertEqual(accept_token(KEY), ACCEPT)
        for n in range(64):
            key = base64.b64encode(bytes([n]) * 16)
            self.assertEqual(accept_token(key), generate_accept_token(key))

    def test_unsendable(self) -> None:
        """What cannot go on the wire is a ValueError (the layer fails the connection)."""
        for target, host, headers in [
            ("/a b", "h", []), ("/wß", "h", []), ("", "h", []),
            ("/", "h\r\nX: y", []), ("/", "a..b\u00fc", []),
            ("/", "h", [("X-A", "v\r\nInjected: 1")]), ("/", "h", [("Bad Name", "v")]),
            ("/", "h", [("", "v")]),
        ]:
            with self.assertRaises(ValueError, msg=repr((target, host, headers))):
                upgrade_request(target, host, KEY, headers)


class ResponseChecks(SynchronousTestCase):
    def test_gorilla_101_and_leftover(self) -> None:
        frame = b"\x82\x03abc"
        self.assertEqual(read_upgrade_response(GORILLA_101 + frame, KEY, None),
                         Accepted(None, frame))

    def test_plain_101_answers_as_the_parser_does(self) -> None:
        """The byte-for-byte gorilla/wsproto answer (taken on sight) gets the answer the
        full reading gives, echo or not, and so do its near misses."""
        from vtwist.transport.ws import client_upgrade
        from vtwist.transport.ws.http import accept_response

        echoed = accept_response(KEY, "ZWFybHk") + b"\x82\x01x"
        unusual = echoed.replace(b"\r\nUpgrade", b"\r\nX-A: b\r\nUpgrade")  # not plain
        other = accept_response(KEY, "b3RoZXI")
        extension = GORILLA_101[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        plain = client_upgrade._PLAIN_101
        for answer, offered, expected in [
                (GORILLA_101, None, Accepted(None, b"")),
                (GORILLA_101, "ZWFybHk", Accepted(None, b"")),  # no echo: V2Ray 4.34
                (echoed, "ZWFybHk", Accepted("ZWFybHk", b"\x82\x01x")),
                (unusual, "ZWFybHk", Accepted("ZWFybHk", b"\x82\x01x")),
                (other, "ZWFybHk", Refused("subprotocol 'b3RoZXI' was not offered")),
                (echoed, None, Refused("subprotocol 'ZWFybHk' was not offered")),
                (GORILLA_101.replace(ACCEPT, ACCEPT[:-2] + b"x="), None,
                 Refused("bad Sec-WebSocket-Accept")),
                (extension, None, Refused(
                    "extensions accepted that were not offered: b'permessage-deflate'"))]:
            self.assertEqual(read_upgrade_response(answer, KEY, offered), expected)
            self.patch(client_upgrade, "_PLAIN_101", b"no fast path")
            self.assertEqual(read_upgrade_response(answer, KEY, offered), expected)
            self.patch(client_upgrade, "_PLAIN_101", plain)

    def test_nginx_like_101(self) -> None:
        answer = response(b"Server: nginx/1.22.1", b"Date: Sat, 05 Dec 2026 14:00:00 GMT",
                          b"connection: keep-alive, upgrade", b"UPGRADE:  WebSocket ",
                          b"sec-websocket-accept:" + ACCEPT,
                          b"Sec-WebSocket-Extensions: ",
                          b"Sec-WebSocket-Protocol: aGVsbG8",
                          status=b"HTTP/1.1 101")
        self.assertEqual(read_upgrade_response(answer, KEY, "aGVsbG8"), Accepted("aGVsbG8", b""))

    def test_unusual_layout_goes_to_h11(self) -> None:
        """Bare LF line ends, folded lines, HTTP/1.0: h11 reads them, same rules."""
        bare = GORILLA_101.replace(b"\r\n", b"\n") + b"\x88\x00"
        self.assertEqual(read_upgrade_response(bare, KEY, None), Accepted(None, b"\x88\x00"))
        folded = response(*GOOD, b"X-Long: a", b" b")
        self.assertIsInstance(read_upgrade_response(folded, KEY, None), (Accepted, Refused))
        old = response(*GOOD, status=b"HTTP/1.0 101 Switching Protocols")
        self.assertEqual(read_upgrade_response(old, KEY, None), Accepted(None, b""))
        wrong = response(*GOOD[:2], b"Sec-WebSocket-Accept: x",
                         status=b"HTTP/1.0 101 Switching Protocols")
        self.assertEqual(read_upgrade_response(wrong, KEY, None),
                         Refused("bad Sec-WebSocket-Accept"))

    def test_truncated_waits(self) -> None:
        for cut in range(len(GORILLA_101)):
            self.assertIsNone(read_upgrade_response(GORILLA_101[:cut], KEY, None), cut)

    def test_malformed(self) -> None:
        """Each of these is a Refused with a reason, never an exception."""
        cases = {
            "wrong accept key": response(*GOOD[:2], b"Sec-WebSocket-Accept: "
                                         + generate_accept_token(b"other")),
            "no accept key": response(*GOOD[:2]),
            "two accept keys": response(*GOOD, GOOD[2]),
            "missing Upgrade": response(*GOOD[1:]),
            "Upgrade: h2c": response(b"Upgrade: h2c", *GOOD[1:]),
            "two Upgrade headers": response(GOOD[0], *GOOD),
            "missing Connection": response(GOOD[0], GOOD[2]),
            "Connection: keep-alive": response(GOOD[0], b"Connection: keep-alive", GOOD[2]),
            "extension not offered": response(*GOOD, b"Sec-WebSocket-Extensions: "
                                              b"permessage-deflate"),
            "protocol not offered": response(*GOOD, b"Sec-WebSocket-Protocol: chat"),
            "early data mismatch": response(*GOOD, b"Sec-WebSocket-Protocol: aGVsbG9v"),
            "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\r\n\r\n",
            "no status line": b"\r\n".join(GOOD) + b"\r\n\r\n",
            "bad header line": response(*GOOD, b"no colon here"),
            "control character": response(*GOOD, b"X-A: \x00"),
            "oversized": GORILLA_101[:-2] + b"X-Pad: " + b"a" * MAX_RESPONSE_BYTES,
        }
        for name, answer in cases.items():
            offered = "aGVsbG8" if name == "early data mismatch" else None
            result = read_upgrade_response(answer, KEY, offered)
            self.assertIsInstance(result, Refused, name)
            self.assertIsNone(result.status, name)  # type: ignore[union-attr]
            self.assertTrue(result.reason, name)  # type: ignore[union-attr]

    def test_not_101(self) -> None:
        """Another status is refused as soon as the status line is in."""
        for status in (b"200 OK", b"404 Not Found", b"400 Bad Request", b"100 Continue",
                       b"301 Moved Permanently", b"502 Bad Gateway"):
            line = b"HTTP/1.1 " + status + b"\r\n"
            result = read_upgrade_response(line, KEY, None)
            self.assertEqual(result, Refused(f"server answered HTTP {int(status[:3])}",
                                             int(status[:3])))
            whole = response(*GOOD, status=line[:-2])
            self.assertEqual(read_upgrade_response(whole, KEY, None), result)


class ClientLayerFailures(SynchronousTestCase):
    """The layer with a fake transport: a bad answer fails the connect, logs one line, and
    closes; a slow or silent server times out; a close mid-answer fails the connect."""

    def layer(self, settings: WSSettings | None = None) -> tuple[WSClientLayer, StringTransport,
                                                                  list[Any], Clock]:
        outcome: list[Any] = []
        ready: Deferred = Deferred()
        ready.addBoth(outcome.append)
        clock = Clock()
        layer = WSClientLayer(Factory.forProtocol(Recorder), ready, "example.test:8443",
                              settings or WSSettings(path="/ws"), clock)
        transport = StringTransport()
        layer.makeConnection(transport)
        return layer, transport, outcome, clock

    def key_of(self, transport: StringTransport) -> bytes:
        for line in transport.value().split(b"\r\n"):
            if line.startswith(b"Sec-WebSocket-Key: "):
                return line.split(b": ", 1)[1]
        raise AssertionError(transport.value())

    def test_good_answer(self) -> None:
        layer, transport, outcome, _ = self.layer()
        accept = generate_accept_token(self.key_of(transport))
        answer = GORILLA_101.replace(ACCEPT, accept)
        layer.dataReceived(answer[:10])
        self.assertEqual(outcome, [])
        layer.dataReceived(answer[10:] + b"\x82\x02hi")
        self.assertIs(outcome[0], layer.app)
        self.assertEqual(bytes(layer.app.data), b"hi")

    def test_bad_answers_fail_cleanly(self) -> None:
        bad = [
            lambda accept: response(*GOOD[:2], b"Sec-WebSocket-Accept: " + ACCEPT),
            lambda accept: response(GOOD[1], b"Sec-WebSocket-Accept: " + accept),
            lambda accept: response(GOOD[0], GOOD[1], b"Sec-WebSocket-Accept: " + accept,
                                    status=b"HTTP/1.1 200 OK"),
            lambda accept: response(GOOD[0], GOOD[1], b"Sec-WebSocket-Accept: " + accept,
                                    b"X-Pad: " + b"a" * MAX_RESPONSE_BYTES),
            lambda accept: b"SSH-2.0-OpenSSH_9.2\r\n" + b"x" * (MAX_RESPONSE_BYTES + 1),
        ]
        for make in bad:
            layer, transport, outcome, _ = self.layer()
            layer.dataReceived(make(generate_accept_token(self.key_of(transport))))
            self.assertIsInstance(outcome[0], Failure)
            self.assertIsInstance(outcome[0].value, LayerHandshakeError)
            self.assertTrue(transport.disconnecting)
            self.assertIsNone(layer.app)
            layer.connectionLost(Failure(error.ConnectionDone()))
            self.assertEqual(len(outcome), 1)

    def test_truncated_then_closed(self) -> None:
        layer, transport, outcome, _ = self.layer()
        layer.dataReceived(GORILLA_101[:30])
        layer.connectionLost(Failure(error.ConnectionDone()))
        self.assertIsInstance(outcome[0].value, LayerHandshakeError)
        self.assertIn("closed by peer", str(outcome[0].value))

    def test_truncated_then_silent_times_out(self) -> None:
        layer, transport, outcome, clock = self.layer()
        layer.dataReceived(GORILLA_101[:30])
        clock.advance(8)
        self.assertIn("no handshake within", str(outcome[0].value))
        self.assertTrue(transport.disconnecting)

    def test_unsendable_request(self) -> None:
        layer, transport, outcome, _ = self.layer(
            WSSettings(path="/ws", headers=[("X-A", "a\nb")]))
        self.assertIn("cannot send the upgrade request", str(outcome[0].value))
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_early_data_echo_mismatch(self) -> None:
        """The server echoed another Sec-WebSocket-Protocol than our early data: the
        (already connected) application is told the upgrade failed."""
        layer, transport, outcome, _ = self.layer(WSSettings(
            path="/ws", max_early_data=8, early_data_header="Sec-WebSocket-Protocol"))
        app = outcome[0]
        app.transport.write(b"hello")
        accept = generate_accept_token(self.key_of(transport))
        self.assertIn(b"\r\nSec-WebSocket-Protocol: aGVsbG8\r\n", transport.value())
        layer.dataReceived(response(*GOOD[:2], b"Sec-WebSocket-Accept: " + accept,
                                    b"Sec-WebSocket-Protocol: aGVsbG9v"))
        self.assertTrue(transport.disconnecting)
        layer.connectionLost(Failure(error.ConnectionDone()))
        self.assertIn("ws upgrade failed", str(app.lost.value))
        self.assertIn("not offered", str(app.lost.value))

    def test_early_data_echoed(self) -> None:
        layer, transport, outcome, _ = self.layer(WSSettings(
            path="/ws", max_early_data=8, early_data_header="Sec-WebSocket-Protocol"))
        app = outcome[0]
        app.transport.write(b"hello")
        accept = generate_accept_token(self.key_of(transport))
        transport.clear()
        layer.dataReceived(response(*GOOD[:2], b"Sec-WebSocket-Accept: " + accept,
                                    b"Sec-WebSocket-Protocol: aGVsbG8"))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(transport.value(), b"")  # not sent again as a message

    def test_server_speaks_first(self) -> None:
        """Early data mode connects the application before the request: bytes from the
        server before it fail the upgrade."""
        layer, transport, outcome, _ = self.layer(WSSettings(
            path="/ws", max_early_data=8, early_data_header="Sec-WebSocket-Protocol"))
        layer.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\n")
        self.assertTrue(transport.disconnecting)


_NAMES = st.sampled_from([b"Upgrade", b"Connection", b"Sec-WebSocket-Accept", b"Server",
                          b"Sec-WebSocket-Protocol", b"Sec-WebSocket-Extensions", b"X-A"])
_VALUES = st.one_of(st.sampled_from([b"websocket", b"Upgrade", ACCEPT, b"aGVsbG8", b""]),
                    st.binary(max_size=20))


class ResponseParserProperties(SynchronousTestCase):
    @settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(_NAMES, _VALUES), max_size=8),
           st.sampled_from([b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 101",
                            b"HTTP/1.0 101 x", b"HTTP/1.1 404 Not Found", b"HTTP/2 101", b""]),
           st.sampled_from([b"\r\n", b"\n"]), st.binary(max_size=12),
           st.sampled_from([None, "aGVsbG8"]), st.integers(0, 400))
    def test_any_head(self, headers: list[tuple[bytes, bytes]], status: bytes, eol: bytes,
                      tail: bytes, offered: str | None, cut: int) -> None:
        """Never an exception; Accepted only for 101 with our accept token, both Upgrade
        and Connection, and no other protocol than the offered one; a prefix of the answer
        gives nothing or the same verdict's kind."""
        answer = eol.join([status, *(n + b": " + v for n, v in headers)]) + eol + eol + tail
        result = read_upgrade_response(answer, KEY, offered)
        self.assertIsInstance(result, (Accepted, Refused, type(None)))
        if isinstance(result, Accepted):
            self.assertIn(b" 101", status)
            self.assertIn((b"Sec-WebSocket-Accept", ACCEPT), headers)
            self.assertIn(result.subprotocol, (None, offered))
            self.assertTrue(answer.endswith(result.leftover))
        prefix = read_upgrade_response(answer[:cut], KEY, offered)
        self.assertIsInstance(prefix, (Accepted, Refused, type(None)))

    @settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(st.permutations(GOOD + [b"Server: x", b"Date: y"]), st.binary(max_size=40),
           st.data())
    def test_valid_answers_in_pieces(self, lines: list[bytes], leftover: bytes,
                                     data: st.DataObject) -> None:
        """A valid 101 in any header order, split anywhere: nothing until the head is in,
        then Accepted with exactly the bytes after it."""
        head = response(*lines)
        for cut in range(len(head)):
            self.assertIsNone(read_upgrade_response(head[:cut], KEY, None))
        extra = data.draw(st.integers(0, len(leftover)))
        self.assertEqual(read_upgrade_response(head + leftover[:extra], KEY, None),
                         Accepted(None, leftover[:extra]))

    @settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300))
    def test_random_bytes(self, blob: bytes) -> None:
        result = read_upgrade_response(blob, KEY, None)
        self.assertNotIsInstance(result, Accepted)

    @settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(st.binary(max_size=200),
                     st.builds(lambda lines, tail: response(*lines) + tail,
                               st.lists(st.sampled_from(GOOD + [b"Sec-WebSocket-Protocol: x",
                                                                b"X: \x00", b"Upgrade: h2c"]),
                                        max_size=5),
                               st.binary(max_size=20))),
           st.integers(1, 9), st.booleans())
    def test_layer_never_hangs(self, answer: bytes, pieces: int, accept: bool) -> None:
        """Any answer, in any pieces, with our accept token or not: the connect succeeds or
        fails (at the latest at the deadline), and a failure closes the connection."""
        outcome: list[Any] = []
        ready: Deferred = Deferred()
        ready.addBoth(outcome.append)
        clock = Clock()
        layer = WSClientLayer(Factory.forProtocol(Recorder), ready, "h:1", WSSettings(), clock)
        transport = StringTransport()
        layer.makeConnection(transport)
        if accept:
            key = transport.value().split(b"Sec-WebSocket-Key: ")[1][:24]
            answer = answer.replace(ACCEPT, generate_accept_token(key))
        step = max(1, len(answer) // pieces)
        for i in range(0, len(answer), step):
            layer.dataReceived(answer[i:i + step])
        clock.advance(8)
        self.assertEqual(len(outcome), 1)
        if isinstance(outcome[0], Failure):
            self.assertIsInstance(outcome[0].value, LayerHandshakeError)
            self.assertTrue(transport.disconnecting)
        else:
            self.assertIs(outcome[0], layer.app)
