"""HTTP CONNECT client side: the sans-IO ConnectClient, HTTPConnectEndpoint in memory, the http
outbound (no UDP, HTTP/1.1-only ALPN) and its settings."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.error import ConnectError as TwistedConnectError
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.config.loader import parse_config
from vtwist.proxy.http.client import HTTPConnectEndpoint
from vtwist.proxy.http.client_codec import ConnectClient, ConnectError, Established, Refused
from vtwist.proxy.http.outbound import HTTPOutbound, http1_only
from vtwist.proxy.upstream import UpstreamServer, UpstreamSettings, UpstreamUser
from vtwist.sansio import NEED_DATA
from vtwist.testing.doubles import HalfCloseTransport, Recorder, log_lines
from vtwist.transport.layer import LayerHandshakeError

GO_REQUEST = (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
              b"User-Agent: Go-http-client/1.1\r\n"
              b"Proxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n"
              b"Proxy-Connection: Keep-Alive\r\n\r\n")


class ConnectClientTests(SynchronousTestCase):
    def test_request_is_v2rays(self) -> None:
        self.assertEqual(ConnectClient("example.com:443", ("alice", "s3cret")).request(),
                         GO_REQUEST)
        self.assertEqual(ConnectClient("[::1]:80").request(),
                         b"CONNECT [::1]:80 HTTP/1.1\r\nHost: [::1]:80\r\n"
                         b"User-Agent: Go-http-client/1.1\r\n"
                         b"Proxy-Connection: Keep-Alive\r\n\r\n")

    def test_established_byte_by_byte_with_trailing(self) -> None:
        c = ConnectClient("a:1")
        c.request()
        head = b"HTTP/1.1 200 Connection established\r\nX: y\r\n\r\n"
        for i in range(len(head) - 1):
            self.assertIs(c.receive_data(head[i:i + 1]), NEED_DATA)
        self.assertEqual(c.receive_data(head[-1:] + b"tunnel bytes"),
                         Established("HTTP/1.1 200 Connection established", b"tunnel bytes"))

    def test_refused(self) -> None:
        for status, line in ((407, b"HTTP/1.1 407 Proxy Authentication Required"),
                             (403, b"HTTP/1.0 403 Forbidden"),
                             (502, b"HTTP/1.1 502 Bad Gateway"),
                             (204, b"HTTP/1.1 204 No Content")):
            c = ConnectClient("a:1")
            c.request()
            result = c.receive_data(line + b"\r\nContent-Length: 0\r\n\r\n")
            self.assertIsInstance(result, Refused)
            self.assertEqual((result.status, result.status_line), (status, line.decode()))

    def test_informational_then_ok(self) -> None:
        c = ConnectClient("a:1")
        c.request()
        self.assertEqual(c.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
                         Established("HTTP/1.1 200 OK"))

    def test_not_http_and_early_close(self) -> None:
        c = ConnectClient("a:1")
        c.request()
        self.assertRaises(ConnectError, c.receive_data, b"SSH-2.0-OpenSSH\r\n\r\n")
        c = ConnectClient("a:1")
        c.request()
        c.receive_data(b"HTTP/1.1 200")
        with self.assertRaises(ConnectError) as e:
            c.receive_data(b"")
        self.assertIn("closed the connection before its response", str(e.exception))

    def test_head_too_big(self) -> None:
        c = ConnectClient("a:1")
        c.request()
        with self.assertRaises(ConnectError):
            c.receive_data(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 70000)

    @given(st.binary(max_size=200))
    def test_garbage_never_crashes(self, data: bytes) -> None:
        c = ConnectClient("a:1")
        c.request()
        try:
            c.receive_data(data)
        except ConnectError:
            pass


class FakeEndpoint:
    def __init__(self) -> None:
        self.transport = HalfCloseTransport(peer=("192.0.2.8", 3128))
        self.protocol: Any = None

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        return defer.succeed(self.protocol)


class EndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.lower = FakeEndpoint()
        self.app = Recorder()

    def connect(self, **kw: Any) -> defer.Deferred[Any]:
        endpoint = HTTPConnectEndpoint(self.lower, Destination.tcp("example.com", 443),
                                       reactor=self.clock, **kw)
        return endpoint.connect(Factory.forProtocol(lambda: self.app))

    def test_200_starts_the_stream(self) -> None:
        d = self.connect(credentials=("alice", "s3cret"))
        self.assertEqual(self.lower.transport.value(), GO_REQUEST)
        self.lower.transport.clear()
        self.lower.protocol.dataReceived(b"HTTP/1.1 200 Connection established\r\n\r\nhi")
        self.assertIs(self.successResultOf(d), self.app)
        self.assertEqual(bytes(self.app.data), b"hi")
        self.lower.protocol.dataReceived(b" there")
        self.assertEqual(bytes(self.app.data), b"hi there")
        self.app.transport.write(b"up")
        self.assertEqual(self.lower.transport.value(), b"up")

    def test_407_fails_with_the_status_line(self) -> None:
        lines = log_lines(self, "vtwist")
        d = self.connect(credentials=("alice", "wrong"))
        self.lower.protocol.dataReceived(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n"
            b"Proxy-Authenticate: Basic realm=\"proxy\"\r\n\r\n")
        f = self.failureResultOf(d, LayerHandshakeError)
        self.assertIn("http: proxy refused CONNECT example.com:443: "
                      "HTTP/1.1 407 Proxy Authentication Required", str(f.value))
        self.assertTrue(self.lower.transport.disconnecting)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("http handshake with 192.0.2.8:3128 failed: proxy refused CONNECT "
                      "example.com:443: HTTP/1.1 407 Proxy Authentication Required", lines[0])
        self.assertFalse(self.app.made)

    def test_close_before_response(self) -> None:
        d = self.connect()
        self.lower.protocol.dataReceived(b"HTTP/1.1 2")
        self.lower.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIn("closed the connection before its response",
                      str(self.failureResultOf(d).value))

    def test_garbage_response(self) -> None:
        d = self.connect()
        self.lower.protocol.dataReceived(b"\x05\x00\x00\x01garbage\r\n\r\n")
        self.assertIn("bad response from the proxy", str(self.failureResultOf(d).value))

    def test_timeout_when_asked(self) -> None:
        d = self.connect(timeout=2.0)
        self.clock.advance(2.1)
        self.assertIn("no handshake within 2 s", str(self.failureResultOf(d).value))

    def test_h2_is_refused(self) -> None:
        self.lower.transport.negotiatedProtocol = b"h2"
        d = self.connect()
        self.assertIn("HTTP/2 CONNECT is not supported", str(self.failureResultOf(d).value))
        self.assertEqual(self.lower.transport.value(), b"")


class OutboundTests(SynchronousTestCase):
    def outbound(self, users: list[UpstreamUser]) -> HTTPOutbound:
        out = HTTPOutbound(Clock(), "up", UpstreamSettings(
            [UpstreamServer("proxy.example", 3128, users)]))
        self.lower = FakeEndpoint()
        out.transportEndpoint = lambda server: self.lower  # type: ignore[method-assign]
        return out

    def test_credentials_of_a_user(self) -> None:
        out = self.outbound([UpstreamUser("alice", "s3cret")])
        out.endpointFor(Destination.tcp("example.com", 443)).connect(
            Factory.forProtocol(Recorder))
        self.assertEqual(self.lower.transport.value(), GO_REQUEST)

    def test_no_udp(self) -> None:
        lines = log_lines(self, "vtwist.http")
        out = self.outbound([])
        closed: list[bool] = []
        session = out.packetSession(lambda d, s: None, lambda: closed.append(True))
        session.send(b"x", Destination.udp("1.1.1.1", 53))
        session.send(b"y", Destination.udp("1.1.1.1", 53))
        session.close()
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("UDP to udp:1.1.1.1:53 dropped", lines[0])
        self.assertEqual(closed, [])
        d = out.endpointFor(Destination.udp("1.1.1.1", 53)).connect(Factory())
        self.failureResultOf(d, TwistedConnectError)

    def test_tls_offers_http11_only(self) -> None:
        config = parse_config({"inbounds": [], "outbounds": [
            {"protocol": "http", "settings": {"servers": [{"address": "a", "port": 1}]},
             "streamSettings": {"security": "tls"}},
            {"protocol": "http", "settings": {"servers": [{"address": "a", "port": 1}]},
             "streamSettings": {"security": "tls", "tlsSettings": {"alpn": ["h2"]}}}]})
        self.assertEqual(http1_only(config.outbounds[0].stream).tls.alpn, ["http/1.1"])
        self.assertEqual(config.outbounds[0].stream.tls.alpn, [])
        self.assertEqual(http1_only(config.outbounds[1].stream).tls.alpn, ["h2"])
        self.assertIsNone(http1_only(None))


class SettingsTests(SynchronousTestCase):
    def test_servers(self) -> None:
        out = parse_config({"inbounds": [], "outbounds": [{"protocol": "http", "settings": {
            "servers": [{"address": "127.0.0.1", "port": 8080,
                         "users": [{"user": "u", "pass": "p"}]}]}}]}).outbounds[0]
        self.assertEqual(out.settings.servers,
                         [UpstreamServer("127.0.0.1", 8080, [UpstreamUser("u", "p")])])

    def test_no_servers(self) -> None:
        with self.assertRaises(Exception) as e:
            parse_config({"inbounds": [], "outbounds": [
                {"protocol": "http", "settings": {"servers": []}}]})
        self.assertIn("at least one server", str(e.exception))
