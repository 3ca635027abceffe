"""The sans-IO HTTP proxy codec: request heads, destinations, header rewriting, framing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.proxy.http import codec
from vtwist.proxy.http.codec import (
    Body,
    BodyEnd,
    ClientClosed,
    HttpError,
    ProxyRequest,
    ResponseEnd,
    ResponseHead,
    ServerCodec,
    UpstreamCodec,
)


def one_request(data: bytes, **kw: bool) -> ProxyRequest:
    events = ServerCodec(**kw).receive_data(data)
    assert isinstance(events[0], ProxyRequest), events
    return events[0]


class RequestTests(SynchronousTestCase):
    def test_connect(self) -> None:
        c = ServerCodec()
        events = c.receive_data(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
                                b"\r\n\x16\x03\x01early")
        request = events[0]
        assert isinstance(request, ProxyRequest)
        self.assertTrue(request.connect)
        self.assertEqual(request.destination, Destination.tcp("example.com", 443))
        self.assertIsNone(request.credentials)
        self.assertEqual(c.take_trailing_data(), b"\x16\x03\x01early")

    def test_connect_ipv6_and_http10(self) -> None:
        request = one_request(b"CONNECT [::1]:8080 HTTP/1.0\r\n\r\n")
        self.assertEqual(request.destination, Destination.tcp("::1", 8080))

    def test_connect_bad_targets(self) -> None:
        for target in (b"example.com", b"example.com:0", b"example.com:65536", b":80",
                       b"[::1", b"::1:80", b"exa mple.com:80", b"host:8x"):
            with self.assertRaises(HttpError) as e:
                ServerCodec().receive_data(b"CONNECT " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(e.exception.status, 400, target)

    def test_absolute_uri(self) -> None:
        request = one_request(b"GET http://user@Example.com:8080/a/b?c=d HTTP/1.1\r\n"
                              b"Host: other\r\n\r\n")
        self.assertFalse(request.connect)
        self.assertEqual(request.destination, Destination.tcp("Example.com", 8080))
        self.assertEqual(request.path, b"/a/b?c=d")
        self.assertEqual(request.host, b"Example.com:8080")

    def test_default_ports(self) -> None:
        self.assertEqual(one_request(b"GET http://a.test HTTP/1.1\r\nHost: a\r\n\r\n")
                         .destination.port, 80)
        request = one_request(b"GET https://a.test HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual((request.destination.port, request.path), (443, b"/"))

    def test_absolute_uri_without_host(self) -> None:
        for target in (b"http:///path", b"http://:80/", b"ftp://a.test/"):
            with self.assertRaises(HttpError) as e:
                ServerCodec().receive_data(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
            self.assertEqual(e.exception.status, 400)

    def test_unparseable_absolute_uri(self) -> None:
        """URLs urlsplit refuses (an unclosed "[", found by the long fuzz run) or that hold
        non-ASCII are a 400, not a ValueError."""
        for target in (b"http://h:8080_[/>/", b"http://[::1/", b"http://a.test/\xe9"):
            with self.assertRaises(HttpError) as e:
                ServerCodec().receive_data(b"POST " + target + b" HTTP/1.1\r\nHost: h\r\n"
                                           b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
            self.assertEqual(e.exception.status, 400, target)

    def test_origin_form(self) -> None:
        """Refused unless allowTransparent, which takes the Host header (as V2Ray)."""
        data = b"GET /x HTTP/1.1\r\nHost: a.test:81\r\n\r\n"
        with self.assertRaises(HttpError) as e:
            ServerCodec().receive_data(data)
        self.assertEqual(e.exception.status, 400)
        request = one_request(data, allow_transparent=True)
        self.assertEqual((request.destination, request.path),
                         (Destination.tcp("a.test", 81), b"/x"))

    def test_malformed(self) -> None:
        for data in (b"GARBAGE\r\n\r\n", b"GET http://a/ HTTP/9.9\r\n\r\n",
                     b"GET http://a/ HTTP/1.1\r\nBad Header\r\n\r\n",
                     b"GET http://a/ HTTP/1.1\r\n\r\n"):  # 1.1 without Host
            with self.assertRaises(HttpError) as e:
                ServerCodec().receive_data(data)
            self.assertEqual(e.exception.status, 400, data)

    def test_head_too_large(self) -> None:
        c = ServerCodec()
        c.receive_data(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n")
        with self.assertRaises(HttpError) as e:
            for _ in range(70):
                c.receive_data(b"X-Pad: " + b"p" * 1016 + b"\r\n")
        self.assertEqual(e.exception.status, 431)

    def test_head_too_large_in_one_piece(self) -> None:
        with self.assertRaises(HttpError) as e:
            ServerCodec().receive_data(b"GET http://a/ HTTP/1.1\r\nHost: a\r\nX-Pad: "
                                       + b"p" * 70000 + b"\r\n\r\n")
        self.assertEqual(e.exception.status, 431)

    def test_credentials(self) -> None:
        request = one_request(b"CONNECT a:1 HTTP/1.1\r\nHost: a\r\nProxy-Authorization: "
                              + codec.basic_auth("u", "p:w") + b"\r\n\r\n")
        self.assertEqual(request.credentials, ("u", "p:w"))
        for value in (b"Basic !!!", b"Bearer abc", b"Basic " + b"dXNlcg=="):  # no colon
            self.assertIsNone(codec.parse_basic_auth(value))

    def test_body_events_and_pause(self) -> None:
        c = ServerCodec()
        events = c.receive_data(b"POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
                                b"chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET http://b/ HTTP/1.1\r\n"
                                b"Host: b\r\n\r\n")
        self.assertEqual([type(e) for e in events], [ProxyRequest, Body, BodyEnd])
        self.assertEqual(bytes(events[1].data), b"abc")  # type: ignore[attr-defined]
        # The pipelined request waits for the response.
        self.assertEqual(c.receive_data(b""), [])
        c.send_head(ResponseHead(204, b"No Content", []))
        c.end_response()
        self.assertTrue(c.next_cycle())
        request = c.events()[0]
        assert isinstance(request, ProxyRequest)
        self.assertEqual(request.destination, Destination.tcp("b", 80))

    def test_next_cycle_and_eof(self) -> None:
        c = ServerCodec()
        c.receive_data(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        c.send_head(ResponseHead(200, b"OK", [(b"Content-Length", b"2")]))
        c.send_body(b"ok")
        c.end_response()
        self.assertTrue(c.next_cycle())
        self.assertFalse(c.mid_request)
        self.assertEqual(c.receive_data(b""), [ClientClosed()])

    def test_response_framing(self) -> None:
        """h11 frames for the client: chunked without a length, hop-by-hop headers gone."""
        c = ServerCodec()
        c.receive_data(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n")
        head = c.send_head(ResponseHead(200, b"OK", [
            (b"Connection", b"close, X-Secret"), (b"X-Secret", b"1"), (b"Keep-Alive", b"t"),
            (b"Transfer-Encoding", b"chunked"), (b"X-Kept", b"1")]))
        self.assertEqual(head, b"HTTP/1.1 200 OK\r\nX-Kept: 1\r\nTransfer-Encoding: chunked"
                               b"\r\n\r\n")
        self.assertEqual(c.send_body(b"abc") + c.end_response(), b"3\r\nabc\r\n0\r\n\r\n")
        self.assertTrue(c.next_cycle())

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=300))
    def test_garbage_never_crashes(self, data: bytes) -> None:
        c = ServerCodec()
        try:
            c.receive_data(data)
            c.receive_data(b"")
        except HttpError as e:
            self.assertIn(e.status, (400, 431))


class UpstreamTests(SynchronousTestCase):
    def request(self, head: bytes) -> ProxyRequest:
        return one_request(head)

    def test_rewrite(self) -> None:
        request = self.request(
            b"GET http://a.test:8080/p?q HTTP/1.1\r\nHost: wrong\r\nUser-Agent: t\r\n"
            b"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\n"
            b"Proxy-Foo: 1\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nTE: trailers\r\n"
            b"Upgrade: websocket\r\nKeep-Alive: 300\r\nAccept: */*\r\n\r\n")
        up = UpstreamCodec(request)
        self.assertEqual(up.start(), b"GET /p?q HTTP/1.1\r\nHost: a.test:8080\r\nUser-Agent: t"
                                     b"\r\nAccept: */*\r\nConnection: close\r\n\r\n")

    def test_chunked_body(self) -> None:
        request = self.request(b"POST http://a/ HTTP/1.1\r\nHost: a\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n")
        up = UpstreamCodec(request)
        self.assertIn(b"Transfer-Encoding: chunked\r\n", up.start())
        self.assertEqual(up.send_body(b"hello") + up.end_body(), b"5\r\nhello\r\n0\r\n\r\n")

    def test_content_length_body(self) -> None:
        request = self.request(b"PUT http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        up = UpstreamCodec(request)
        self.assertIn(b"Content-Length: 5\r\n", up.start())
        self.assertEqual(up.send_body(b"hello") + up.end_body(), b"hello")

    def test_response_events(self) -> None:
        up = UpstreamCodec(self.request(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))
        up.start()
        up.end_body()
        events = up.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                                 b"Content-Length: 3\r\n\r\nab")
        self.assertEqual([type(e) for e in events], [ResponseHead, ResponseHead, Body])
        self.assertTrue(events[0].informational)  # type: ignore[attr-defined]
        self.assertEqual(up.receive_data(b"c"), [Body(bytearray(b"c")), ResponseEnd()])

    def test_close_delimited_and_cut(self) -> None:
        up = UpstreamCodec(self.request(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))
        up.start()
        up.end_body()
        up.receive_data(b"HTTP/1.0 200 OK\r\n\r\nbody")
        self.assertEqual(up.receive_data(b""), [ResponseEnd()])
        up = UpstreamCodec(self.request(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))
        up.start()
        up.end_body()
        up.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nbody")
        with self.assertRaises(HttpError) as e:
            up.receive_data(b"")
        self.assertEqual(e.exception.status, 502)

    def test_bad_response(self) -> None:
        up = UpstreamCodec(self.request(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))
        up.start()
        with self.assertRaises(HttpError) as e:
            up.receive_data(b"SSH-2.0-OpenSSH\r\n\r\n")
        self.assertEqual(e.exception.status, 502)

    def test_error_responses(self) -> None:
        self.assertEqual(codec.AUTH_REQUIRED,
                         b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: "
                         b'Basic realm="proxy"\r\nContent-Length: 0\r\nConnection: close\r\n'
                         b"Proxy-Connection: close\r\n\r\n")
        self.assertTrue(codec.error_response(504).startswith(b"HTTP/1.1 504 Gateway Timeout"))
