"""The ws server's fast path for a plain upgrade answers with wsproto's exact bytes, and
leaves every request it does not call plain to wsproto (whose errors stay as they were)."""

from __future__ import annotations

import h11
from twisted.trial.unittest import SynchronousTestCase
from wsproto.connection import ConnectionType
from wsproto.events import AcceptConnection
from wsproto.handshake import H11Handshake

from vtwist.transport.ws.http import accept_response, plain_upgrade

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
