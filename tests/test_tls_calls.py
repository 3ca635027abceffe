"""The direct OpenSSL calls of the TLS layer (vtwist.transport.tls.calls), and the same
answers through pyOpenSSL's methods when the binding lacks them."""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from tests.test_tls_memory import NAME, client_settings, server_settings
from vtwist.transport.internals import tls_session_reused
from vtwist.transport.tls import calls
from vtwist.transport.tls.context import (
    ClientCreatorCache,
    RotatingServerOptions,
    server_context_factory,
)


def pair() -> tuple[SSL.Connection, SSL.Connection]:
    """A client and a server connection on memory BIOs, nothing sent yet."""
    server = RotatingServerOptions(lambda: server_context_factory(server_settings(), []))
    settings = client_settings()
    client = ClientCreatorCache().get(settings, NAME, [])
    return client.clientConnectionForTLS(None), server.serverConnectionForTLS(None)


class CallsTests(SynchronousTestCase):
    direct = True

    def setUp(self) -> None:
        if not self.direct:
            self.patch(calls, "DIRECT", False)
        elif not calls.DIRECT:  # pragma: no cover - depends on the pyOpenSSL build
            raise self.skipTest("this pyOpenSSL has no cffi binding")

    def handshake(self) -> tuple[SSL.Connection, SSL.Connection]:
        client, server = pair()
        self.assertEqual(calls.take(server), b"")  # nothing yet, and no exception
        self.assertFalse(calls.handshake(client))
        hello = calls.take(client)
        self.assertEqual(hello[:1], b"\x16")  # a handshake record: the ClientHello
        calls.put(server, hello)
        self.assertFalse(calls.handshake(server))
        calls.put(client, calls.take(server))
        self.assertTrue(calls.handshake(client))
        calls.put(server, calls.take(client))
        self.assertTrue(calls.handshake(server))
        return client, server

    def test_handshake_and_records(self) -> None:
        """A handshake in steps, then records both ways, several read at once."""
        client, server = self.handshake()
        calls.put(client, calls.take(server))  # the tickets
        chunks: list[bytes] = []
        self.assertFalse(calls.read(client, chunks))
        self.assertEqual(chunks, [])
        self.assertEqual(calls.write(client, b"one"), 3)
        self.assertEqual(calls.write(client, memoryview(b"two")), 3)
        calls.put(server, calls.take(client))
        self.assertFalse(calls.read(server, chunks))
        self.assertEqual(b"".join(chunks), b"onetwo")

    def test_large_write_taken_at_once(self) -> None:
        """A write larger than the shared buffer comes out of the BIO whole."""
        client, server = self.handshake()
        data = bytes(range(256)) * 1024  # 256 KiB: 16 records
        view, done = memoryview(data), 0
        while done < len(data):  # (a record per call with partial writes on, as here)
            done += calls.write(client, view[done:])
        out = calls.take(client, len(data))
        self.assertGreater(len(out), len(data))
        self.assertEqual(calls.take(client), b"")
        calls.put(server, out)
        chunks: list[bytes] = []
        self.assertFalse(calls.read(server, chunks))
        self.assertEqual(b"".join(chunks), data)

    def test_close_notify(self) -> None:
        """The peer's close_notify: read says so (True)."""
        client, server = self.handshake()
        client.shutdown()
        calls.put(server, calls.take(client))
        self.assertTrue(calls.read(server, []))

    def test_garbage_raises_pyopenssl_errors(self) -> None:
        """Bytes that are not TLS: the handshake step raises pyOpenSSL's SSL.Error."""
        _, server = pair()
        calls.put(server, b"GET / HTTP/1.1\r\n\r\n")
        self.assertRaises(SSL.Error, calls.handshake, server)

    def test_bad_record_raises(self) -> None:
        """A record that does not decrypt: read raises SSL.Error."""
        client, server = self.handshake()
        calls.write(client, b"payload")
        record = bytearray(calls.take(client))
        record[-1] ^= 1
        calls.put(server, bytes(record))
        self.assertRaises(SSL.Error, calls.read, server, [])


class FallbackCallsTests(CallsTests):
    """The same through pyOpenSSL's public methods."""

    direct = False


class ALPNTests(SynchronousTestCase):
    """The server's ALPN choice (tuning.select_alpn's callback): its own order first, and
    no ALPN at all (the handshake goes on) when nothing offered is one of its own."""

    def negotiate(self, server_alpn: list[str], client_alpn: list[str]) -> bytes | None:
        options = RotatingServerOptions(
            lambda: server_context_factory(server_settings(), server_alpn))
        client = ClientCreatorCache().get(client_settings(), NAME, client_alpn) \
            .clientConnectionForTLS(None)
        server = options.serverConnectionForTLS(None)
        self.assertFalse(calls.handshake(client))
        calls.put(server, calls.take(client))
        self.assertFalse(calls.handshake(server))
        calls.put(client, calls.take(server))
        self.assertTrue(calls.handshake(client))
        self.assertEqual(client.get_alpn_proto_negotiated(),
                         server.get_alpn_proto_negotiated())
        return client.get_alpn_proto_negotiated() or None

    def test_server_order(self) -> None:
        self.assertEqual(self.negotiate(["h2", "http/1.1"], ["http/1.1", "h2"]), b"h2")
        self.assertEqual(self.negotiate(["http/1.1", "h2"], ["h2", "http/1.1"]), b"http/1.1")
        self.assertEqual(self.negotiate(["h2", "http/1.1"], ["x", "http/1.1"]), b"http/1.1")

    def test_nothing_in_common(self) -> None:
        self.assertIsNone(self.negotiate(["h2"], ["http/1.1"]))
        self.assertIsNone(self.negotiate(["h2"], []))


class LeanConnectionTests(SynchronousTestCase):
    """calls.connection: pyOpenSSL's Connection without its constructor's Python where no
    pyOpenSSL callback could look it up, pyOpenSSL's own where one could."""

    def setUp(self) -> None:
        if not calls.DIRECT:  # pragma: no cover - depends on the pyOpenSSL build
            raise self.skipTest("this pyOpenSSL has no cffi binding")

    def test_lean_connections_resume(self) -> None:
        """Lean client and server connections hold what pyOpenSSL's constructor sets, stay
        out of its reverse mapping, and resume a session offered by handle."""
        options = RotatingServerOptions(
            lambda: server_context_factory(server_settings(), ["http/1.1"]))
        creator = ClientCreatorCache().get(client_settings(), NAME, ["http/1.1"])
        first = None
        for _ in range(2):
            client = creator.clientConnectionForTLS(None)
            server = options.serverConnectionForTLS(None)
            for conn in (client, server):
                self.assertEqual(set(vars(conn)), set(vars(SSL.Connection(conn._context))))
                self.assertNotIn(conn._ssl, SSL.Connection._reverse_mapping)
            self.assertEqual(client.get_servername(), NAME.encode())
            self.assertFalse(calls.handshake(client))
            calls.put(server, calls.take(client))
            self.assertFalse(calls.handshake(server))
            calls.put(client, calls.take(server))
            self.assertTrue(calls.handshake(client))
            calls.put(server, calls.take(client))
            self.assertTrue(calls.handshake(server))
            calls.put(client, calls.take(server))  # the tickets
            self.assertFalse(calls.read(client, []))
            self.assertEqual(calls.version(client), 0x0304)
            self.assertEqual(client.get_alpn_proto_negotiated(), b"http/1.1")
            if first is None:
                self.assertFalse(tls_session_reused(server))
                first = calls.session(client)
                self.assertIsNotNone(first)
                creator.session = first
            else:
                self.assertTrue(tls_session_reused(client))
                self.assertTrue(tls_session_reused(server))
            calls.keep_session(client)
            self.assertTrue(client.get_shutdown() & SSL.SENT_SHUTDOWN)

    def test_pyopenssl_callbacks_get_pyopenssl_connections(self) -> None:
        """A context with a pyOpenSSL callback gets pyOpenSSL's own connection, which its
        callbacks find (here an info callback; SNI picking among certificates is another)."""
        context = SSL.Context(SSL.TLS_METHOD)
        seen: list[Any] = []
        context.set_info_callback(lambda conn, where, ret: seen.append(conn))
        conn = calls.connection(context, True, b"example.test")
        self.assertIs(SSL.Connection._reverse_mapping[conn._ssl], conn)
        calls.handshake(conn)
        self.assertIn(conn, seen)
        self.assertEqual(calls.take(conn)[:1], b"\x16")


class ALPNCacheTests(SynchronousTestCase):
    """One server context answers a sequence of different offers, each as if first seen."""

    def test_answers_per_offer(self) -> None:
        options = RotatingServerOptions(
            lambda: server_context_factory(server_settings(), ["h2", "http/1.1"]))
        for offer, expected in [(["http/1.1", "h2"], b"h2"), (["http/1.1"], b"http/1.1"),
                                (["x"], b""), (["http/1.1", "h2"], b"h2"),
                                (["x", "http/1.1"], b"http/1.1"), (["x"], b"")]:
            client = ClientCreatorCache().get(client_settings(), NAME, offer) \
                .clientConnectionForTLS(None)
            server = options.serverConnectionForTLS(None)
            calls.handshake(client)
            calls.put(server, calls.take(client))
            calls.handshake(server)
            calls.put(client, calls.take(server))
            self.assertTrue(calls.handshake(client))
            self.assertEqual(client.get_alpn_proto_negotiated(), expected, offer)
