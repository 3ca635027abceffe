"""The HTTP proxy inbound in memory: StringTransport, task.Clock, a real tunnel service over a
hand-driven outbound (:class:`vtwist.testing.tunnels.FakeOutbound`).

Bad-input cases check the status written (or its absence), that the connection closes, that
exactly one line says why, and that nothing logged a traceback.
"""

from __future__ import annotations

from twisted.internet import error
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.policy import LevelPolicy
from vtwist.proxy.http.codec import basic_auth
from vtwist.proxy.http.server import HttpProxyFactory, HttpProxyProtocol, Phase
from vtwist.testing.doubles import HalfCloseTransport, LogCapture
from vtwist.testing.tunnels import FakeOutbound, PendingConnect
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.service import TunnelService

POLICY = LevelPolicy(handshake=4, conn_idle=300, uplink_only=2, downlink_only=5,
                     connect_timeout=16)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class ServerTestBase(SynchronousTestCase):
    accounts: dict[str, str] = {}
    allow_transparent = False

    def setUp(self) -> None:
        self.clock = Clock()
        self.outbound = FakeOutbound("direct")
        self.factory = HttpProxyFactory(
            TunnelService(Dispatcher([self.outbound]), self.clock), tag="http-in",
            accounts=self.accounts, allow_transparent=self.allow_transparent, policy=POLICY)
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        self.protocol, self.transport = self.connect()

    def connect(self) -> tuple[HttpProxyProtocol, HalfCloseTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = HalfCloseTransport(peer=("192.0.2.7", 5000))
        protocol.makeConnection(transport)
        return protocol, transport  # type: ignore[return-value]

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def written(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def pending(self, index: int = -1) -> PendingConnect:
        return self.outbound.connects[index]

    def assertClosedWith(self, status: bytes | None, why: str) -> None:
        """Closed after ``status`` (or nothing), one line containing ``why``, no traceback."""
        data = self.written()
        if status is None:
            self.assertEqual(data, b"")
        else:
            self.assertTrue(data.startswith(b"HTTP/1.1 " + status), data)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.protocol.phase, Phase.CLOSED)
        lines = self.logs.lines()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(why, lines[0])
        self.assertEqual(self.logs.failures(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ConnectTests(ServerTestBase):
    def test_connect_relays_after_200(self) -> None:
        self.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nearly")
        pending = self.pending()
        self.assertEqual(pending.destination, Destination.tcp("example.com", 443))
        self.assertEqual(self.written(), b"")  # no 200 before the outbound connects
        self.assertEqual(self.transport.producerState, "paused")
        self.send(b"+more")
        remote = pending.succeed()
        self.assertEqual(self.written(), b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.assertEqual(pending.transport.value(), b"early+more")  # type: ignore[union-attr]
        remote.dataReceived(b"server bytes")
        self.assertEqual(self.written(), b"server bytes")
        self.assertEqual(self.protocol.phase, Phase.TUNNEL)
        self.protocol.readConnectionLost()
        self.assertTrue(pending.transport.writeClosed)  # type: ignore[union-attr]

    def test_refused_is_502(self) -> None:
        self.send(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.pending().fail(error.ConnectionRefusedError())
        self.assertClosedWith(b"502 Bad Gateway", "connection refused")

    def test_timeout_is_504(self) -> None:
        self.send(b"CONNECT 10.255.255.1:80 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(16)
        self.assertTrue(self.pending().cancelled)
        self.assertClosedWith(b"504 Gateway Timeout", "timed out")

    def test_port_zero(self) -> None:
        self.send(b"CONNECT example.com:0 HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertClosedWith(b"400 Bad Request", "rejected http: bad CONNECT target")
        self.assertEqual(self.outbound.connects, [])

    def test_access_line(self) -> None:
        self.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n")
        accepted = [e for e in self.logs.events if e.get("log_namespace") == "vtwist.access"]
        self.assertIn("from 192.0.2.7:5000 accepted tcp:example.com:443 [http-in >> direct]",
                      accepted[0]["line"])


class PlainTests(ServerTestBase):
    def exchange(self, request: bytes, response: bytes = OK) -> bytes:
        """One request through a fresh outbound connection; what the origin saw."""
        self.send(request)
        pending = self.pending()
        remote = pending.succeed()
        seen = pending.transport.value()  # type: ignore[union-attr]
        remote.dataReceived(response)
        return seen  # type: ignore[no-any-return]

    def test_get_rewritten_and_relayed(self) -> None:
        seen = self.exchange(b"GET http://a.test:8080/x?y HTTP/1.1\r\nHost: a.test:8080\r\n"
                             b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5"
                             b"\r\nAccept: */*\r\n\r\n")
        self.assertEqual(seen, b"GET /x?y HTTP/1.1\r\nHost: a.test:8080\r\nAccept: */*\r\n"
                               b"Connection: close\r\n\r\n")
        self.assertEqual(self.pending().destination, Destination.tcp("a.test", 8080))
        self.assertEqual(self.written(), OK)
        self.assertTrue(self.pending().transport.disconnecting)  # type: ignore[union-attr]
        self.assertEqual(self.protocol.phase, Phase.HEAD)
        self.assertFalse(self.transport.disconnecting)

    def test_keep_alive_across_hosts(self) -> None:
        """Each request is routed and connected on its own; the client connection stays."""
        self.exchange(b"GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.exchange(b"GET http://b.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n",
                      b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        self.assertEqual([p.destination.host for p in self.outbound.connects],
                         ["a.test", "b.test"])
        self.assertEqual(self.written(), OK + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked"
                                              b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        accepted = [e["line"] for e in self.logs.events
                    if e.get("log_namespace") == "vtwist.access" and e.get("status") != "closed"]
        self.assertEqual(len(accepted), 2)

    def test_pipelined_request_waits(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n"
                  b"GET http://b.test/ HTTP/1.1\r\nHost: b\r\n\r\n")
        self.assertEqual(len(self.outbound.connects), 1)
        self.pending().succeed().dataReceived(OK)
        self.assertEqual([p.destination.host for p in self.outbound.connects],
                         ["a.test", "b.test"])

    def test_connection_close(self) -> None:
        self.exchange(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        self.assertIn(b"Connection: close", self.written())
        self.assertTrue(self.transport.disconnecting)

    def test_close_delimited_response_to_http11_is_chunked(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        remote = self.pending().succeed()
        remote.dataReceived(b"HTTP/1.0 200 OK\r\n\r\nabc")
        remote.readConnectionLost()
        self.assertEqual(self.written(), b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                         b"3\r\nabc\r\n0\r\n\r\n")
        self.assertEqual(self.protocol.phase, Phase.HEAD)

    def test_chunked_body_streamed(self) -> None:
        self.send(b"POST http://a.test/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                  b"\r\n5\r\nhello\r\n")
        self.assertEqual(self.transport.producerState, "paused")  # while connecting
        pending = self.pending()
        pending.succeed()
        out = pending.transport
        assert out is not None
        self.assertEqual(self.transport.producerState, "producing")
        self.assertIs(out.producer, self.transport)  # a slow origin pauses the client
        self.assertIs(self.transport.producer, out)  # a slow client pauses the origin
        self.assertTrue(out.value().endswith(b"Transfer-Encoding: chunked\r\nConnection: close"
                                             b"\r\n\r\n5\r\nhello\r\n"))
        out.clear()
        self.send(b"6\r\n world\r\n")
        self.assertEqual(out.value(), b"6\r\n world\r\n")
        self.send(b"0\r\n\r\n")
        self.assertEqual(out.value(), b"6\r\n world\r\n0\r\n\r\n")
        self.assertIsNone(out.producer)
        self.assertEqual(self.transport.producerState, "paused")  # until the response ends

    def test_content_length_body(self) -> None:
        seen = self.exchange(b"PUT http://a.test/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                             b"\r\nabc")
        self.assertTrue(seen.endswith(b"Content-Length: 3\r\nConnection: close\r\n\r\nabc"))

    def test_refused_is_502(self) -> None:
        self.send(b"GET http://127.0.0.1:9/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.pending().fail(error.ConnectionRefusedError())
        self.assertClosedWith(b"502", "connection refused")

    def test_timeout_is_504(self) -> None:
        self.send(b"GET http://10.255.255.1/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.clock.advance(16)
        self.assertClosedWith(b"504", "timed out")

    def test_garbage_response_is_502(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.pending().succeed().dataReceived(b"SSH-2.0-x\r\n\r\n")
        self.assertClosedWith(b"502", "bad response")

    def test_origin_gone_before_response(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.pending().succeed().connectionLost(Failure(error.ConnectionDone()))
        self.assertClosedWith(b"502", "origin closed")

    def test_response_cut_short_closes(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        remote = self.pending().succeed()
        remote.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
        self.transport.clear()
        remote.connectionLost(Failure(error.ConnectionLost()))
        self.assertClosedWith(None, "origin closed")

    def test_client_gone_closes_origin(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        pending = self.pending()
        pending.succeed()
        self.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(pending.transport.disconnecting)  # type: ignore[union-attr]
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_client_gone_while_connecting(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertTrue(self.pending().cancelled)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_origin_form_refused(self) -> None:
        self.send(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertClosedWith(b"400", "not a proxy request")

    def test_absolute_uri_without_host(self) -> None:
        self.send(b"GET http:///x HTTP/1.1\r\nHost: a.test\r\n\r\n")
        self.assertClosedWith(b"400", "no host")


class TransparentTests(ServerTestBase):
    allow_transparent = True

    def test_origin_form_uses_host(self) -> None:
        self.send(b"GET /x HTTP/1.1\r\nHost: a.test:81\r\n\r\n")
        self.assertEqual(self.pending().destination, Destination.tcp("a.test", 81))


class BadInputTests(ServerTestBase):
    def test_malformed_request_line(self) -> None:
        self.send(b"HELLO\r\n\r\n")
        self.assertClosedWith(b"400", "rejected http: bad request")

    def test_head_too_large(self) -> None:
        self.send(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n")
        for _ in range(70):
            if self.protocol.phase is Phase.CLOSED:
                break
            self.send(b"X-Pad: " + b"p" * 1016 + b"\r\n")
        self.assertClosedWith(b"431", "rejected http")

    def test_handshake_timeout_mid_head(self) -> None:
        self.send(b"GET http://a/ HTTP/1.1\r\nHost:")
        self.clock.advance(4)
        self.assertClosedWith(b"408 Request Timeout", "request head not complete after 4s")

    def test_handshake_timeout_silent_client(self) -> None:
        self.clock.advance(4)
        self.assertClosedWith(None, "no request within 4s")

    def test_idle_keep_alive_closes_quietly(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.pending().succeed().dataReceived(OK)
        self.written()
        self.clock.advance(4)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.logs.lines(), [])

    def test_closed_mid_head(self) -> None:
        self.send(b"GET http://a/ HT")
        self.protocol.readConnectionLost()
        self.assertClosedWith(b"400", "rejected http")

    def test_closed_mid_body(self) -> None:
        self.send(b"POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc")
        pending = self.pending()
        pending.succeed()
        self.protocol.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(pending.transport.disconnecting)  # type: ignore[union-attr]
        self.assertEqual(self.logs.failures(), [])

    def test_client_half_close_after_request_gets_response(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.protocol.readConnectionLost()
        self.pending().succeed().dataReceived(OK)
        self.assertEqual(self.written(), OK)
        self.assertTrue(self.transport.disconnecting)


class AuthTests(ServerTestBase):
    accounts = {"alice": "s3cret"}

    def test_missing_credentials(self) -> None:
        self.send(b"GET http://a.test/ HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertClosedWith(b"407", "proxy authentication required")
        self.assertEqual(self.outbound.connects, [])

    def test_wrong_password(self) -> None:
        self.send(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a\r\nProxy-Authorization: "
                  + basic_auth("alice", "nope") + b"\r\n\r\n")
        data = self.transport.value()
        self.assertIn(b'Proxy-Authenticate: Basic realm="proxy"\r\n', data)
        self.assertClosedWith(b"407 Proxy Authentication Required", "invalid user or password")

    def test_user_is_email(self) -> None:
        self.send(b"CONNECT a.test:443 HTTP/1.1\r\nHost: a\r\nProxy-Authorization: "
                  + basic_auth("alice", "s3cret") + b"\r\n\r\n")
        lines = [e["line"] for e in self.logs.events if e.get("log_namespace") == "vtwist.access"]
        self.assertIn("email: alice", lines[0])
        self.pending().succeed()
        self.assertEqual(self.written(), b"HTTP/1.1 200 Connection established\r\n\r\n")
