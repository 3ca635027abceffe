"""Fallbacks (shared by VLESS and Trojan): settings as 4.34 reads them, its choice by ALPN
and path, PROXY headers, and the hand-off over real sockets."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.proxy.fallback.choose import choose_fallback, request_path
from vtwist.proxy.fallback.handoff import hand_off, negotiated_alpn
from vtwist.proxy.fallback.proxyheader import V2_SIGNATURE, proxy_header
from vtwist.proxy.fallback.settings import UNIX_PATH_MAX, Fallback, parse_fallbacks


def parse(value: object) -> list[Fallback]:
    return parse_fallbacks(Node(value, "inbounds[0].settings.fallbacks"))


class SettingsTests(SynchronousTestCase):
    """``fallbacks`` as infra/conf/vless.go builds them."""

    def test_dest_forms(self) -> None:
        fbs = parse([{"dest": 80}, {"dest": "8080"}, {"dest": "example.com:443"},
                     {"dest": "/run/web.sock"}, {"dest": "@abstract"},
                     {"dest": "[::1]:81", "xver": 2, "alpn": "h2", "path": "/x"}])
        self.assertEqual([(f.type, f.dest) for f in fbs],
                         [("tcp", "127.0.0.1:80"), ("tcp", "127.0.0.1:8080"),
                          ("tcp", "example.com:443"), ("unix", "/run/web.sock"),
                          ("unix", "@abstract"), ("tcp", "[::1]:81")])
        self.assertEqual(fbs[5].host_port, ("::1", 81))
        self.assertEqual((fbs[5].xver, fbs[5].alpn, fbs[5].path), (2, "h2", "/x"))
        self.assertEqual(fbs[4].unix_address, "\0abstract")

    def test_padded_abstract(self) -> None:
        (fb,) = parse([{"dest": "@@haproxy"}])
        self.assertEqual(len(fb.dest), UNIX_PATH_MAX)
        self.assertTrue(fb.dest.startswith("@haproxy\0"))

    def test_empty_means_none(self) -> None:
        self.assertEqual(parse(None), [])
        self.assertEqual(parse([]), [])

    def test_errors_name_the_path(self) -> None:
        cases = [
            ([{"dest": 80, "path": "ws"}], "fallbacks[0].path"),
            ([{"dest": 80}, {"dest": 80, "xver": 3}], "fallbacks[1].xver"),
            ([{"alpn": "h2"}], "fallbacks[0].dest"),
            ([{"dest": "localhost"}], "fallbacks[0].dest"),
            ([{"dest": 80, "xver": -1}], "fallbacks[0].xver"),
            ([{"dest": "serve-ws-none"}], "fallbacks[0].dest"),
        ]
        for value, path in cases:
            with self.assertRaises(ConfigError) as ctx:
                parse(value)
            self.assertIn(path, str(ctx.exception))


GET = b"GET /ws HTTP/1.1\r\nHost: example.com\r\n\r\n"


class ChooseTests(SynchronousTestCase):
    """4.34's choice: ALPN row, then the request path."""

    def test_paths(self) -> None:
        self.assertEqual(request_path(GET), "/ws")
        self.assertEqual(request_path(b"POST /a/b?c HTTP/1.1\r\n\r\n"), "/a/b?c")
        self.assertEqual(request_path(b"OPTIONS /x HTTP/1.1\r\n\r\n"), "/x")
        self.assertIsNone(request_path(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
        self.assertIsNone(request_path(b"GET /x"))  # shorter than 18 bytes
        self.assertIsNone(request_path(b"GET /" + b"a" * 80 + b" HTTP/1.1\r\n"))
        self.assertIsNone(request_path(b"GET /abc\r\nHost: example.com\r\n"))
        self.assertIsNone(request_path(b"CONNECTION /x HTTP/1.1\r\n\r\n"))

    def test_alpn_and_path(self) -> None:
        fbs = parse([{"dest": 80}, {"alpn": "h2", "dest": 81},
                     {"path": "/ws", "dest": 82}, {"alpn": "h2", "path": "/h2ws", "dest": 83}])
        port = lambda fb: fb.host_port[1]  # noqa: E731
        self.assertEqual(port(choose_fallback(fbs, None, GET)), 82)
        self.assertEqual(port(choose_fallback(fbs, "http/1.1", GET)), 82)
        self.assertEqual(port(choose_fallback(fbs, "h2", GET)), 82)  # inherited path
        self.assertEqual(port(choose_fallback(fbs, "h2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")), 81)
        self.assertEqual(port(choose_fallback(fbs, "h2", GET.replace(b"/ws", b"/h2ws"))), 83)
        self.assertEqual(port(choose_fallback(fbs, None, GET.replace(b"/ws", b"/h2ws"))), 80)
        self.assertEqual(port(choose_fallback(fbs, None, b"\x16\x03\x01")), 80)

    def test_later_entry_wins_and_no_default(self) -> None:
        fbs = parse([{"dest": 80}, {"dest": 81}])
        self.assertEqual(choose_fallback(fbs, None, GET).host_port[1], 81)
        only_h2 = parse([{"alpn": "h2", "dest": 81}])
        self.assertIsNone(choose_fallback(only_h2, "http/1.1", GET))
        self.assertEqual(choose_fallback(only_h2, "h2", GET).host_port[1], 81)
        only_path = parse([{"path": "/a", "dest": 81}])
        self.assertIsNone(choose_fallback(only_path, None, GET))
        self.assertIsNone(choose_fallback([], None, GET))

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.binary(max_size=300), st.sampled_from([None, "h2", "http/1.1", "x"]))
    def test_never_raises(self, first: bytes, alpn: str | None) -> None:
        fbs = parse([{"dest": 80}, {"alpn": "h2", "dest": 81}, {"path": "/ws", "dest": 82}])
        self.assertIsNotNone(choose_fallback(fbs, alpn, first))


class ProxyHeaderTests(SynchronousTestCase):
    """The PROXY headers 4.34 writes."""

    def test_v1(self) -> None:
        self.assertEqual(proxy_header(1, ("10.0.0.1", 5555), ("10.0.0.2", 443)),
                         b"PROXY TCP4 10.0.0.1 10.0.0.2 5555 443\r\n")
        self.assertEqual(proxy_header(1, ("::1", 5555), ("::1", 443)),
                         b"PROXY TCP6 ::1 ::1 5555 443\r\n")
        self.assertEqual(proxy_header(0, ("::1", 1), ("::1", 2)), b"")

    def test_v2(self) -> None:
        h = proxy_header(2, ("10.0.0.1", 5555), ("10.0.0.2", 443))
        self.assertEqual(h, V2_SIGNATURE + b"\x21\x11\x00\x0c\x0a\x00\x00\x01\x0a\x00\x00\x02"
                         b"\x15\xb3\x01\xbb")
        h6 = proxy_header(2, ("::1", 1), ("::2", 2))
        self.assertEqual(len(h6), 16 + 36)
        self.assertEqual(h6[12:16], b"\x21\x21\x00\x24")


class Recorder(Protocol):
    """A fallback target: records what arrives, answers ``reply`` once, echoes nothing."""

    def __init__(self, box: dict) -> None:
        self.box = box

    def connectionMade(self) -> None:
        self.box["data"] = b""
        self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    def dataReceived(self, data: bytes) -> None:
        self.box["data"] += data
        if b"END" in self.box["data"]:
            self.transport.loseConnection()
            self.box["done"].callback(None)


class Client(Protocol):
    """The inbound side: a raw socket whose protocol forwards to a FallbackLink."""

    link = None

    def __init__(self, box: dict, fb: Fallback) -> None:
        self.box = box
        self.fb = fb

    def dataReceived(self, data: bytes) -> None:
        if self.link is None:
            self.link = hand_off(self.transport, self.fb, data, reactor)
        else:
            self.link.received(data)

    def connectionLost(self, reason: object = None) -> None:
        if self.link is not None:
            self.link.lost(reason)


class HandOffTests(TestCase):
    """A real listener (tcp and unix) gets the PROXY header and exactly the client's bytes."""

    @defer.inlineCallbacks
    def _through(self, dest_kind: str, xver: int) -> defer.Deferred:
        box: dict = {"done": defer.Deferred()}
        if dest_kind == "unix":
            path = os.path.join(tempfile.mkdtemp(), "web.sock")
            target = reactor.listenUNIX(path, Factory.forProtocol(lambda: Recorder(box)))
            fb = parse([{"dest": path, "xver": xver}])[0]
        else:
            target = reactor.listenTCP(0, Factory.forProtocol(lambda: Recorder(box)),
                                       interface="127.0.0.1")
            fb = parse([{"dest": target.getHost().port, "xver": xver}])[0]
        self.addCleanup(target.stopListening)
        front = reactor.listenTCP(0, Factory.forProtocol(lambda: Client(box, fb)),
                                  interface="127.0.0.1")
        self.addCleanup(front.stopListening)
        got = defer.Deferred()

        class Browser(Protocol):
            def connectionMade(self) -> None:
                self.buf = b""
                self.transport.write(GET)

            def dataReceived(self, data: bytes) -> None:
                self.buf += data
                if self.buf.endswith(b"ok"):
                    self.transport.write(b"more" * 1000 + b"END")

            def connectionLost(self, reason: object = None) -> None:
                got.callback(self.buf)

        from twisted.internet.endpoints import TCP4ClientEndpoint
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", front.getHost().port).connect(
            Factory.forProtocol(Browser))
        yield box["done"]
        answer = yield got
        self.assertTrue(answer.endswith(b"ok"))
        return box["data"]

    @defer.inlineCallbacks
    def test_tcp_v1(self) -> None:
        data = yield self._through("tcp", 1)
        header, _, rest = data.partition(b"\r\n")
        self.assertTrue(header.startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 "))
        self.assertEqual(rest, GET + b"more" * 1000 + b"END")

    @defer.inlineCallbacks
    def test_unix_v2(self) -> None:
        data = yield self._through("unix", 2)
        self.assertTrue(data.startswith(V2_SIGNATURE))
        self.assertEqual(data[28:], GET + b"more" * 1000 + b"END")

    @defer.inlineCallbacks
    def test_no_header(self) -> None:
        data = yield self._through("tcp", 0)
        self.assertEqual(data, GET + b"more" * 1000 + b"END")

    def test_alpn_accessor(self) -> None:
        class T:
            negotiatedProtocol = b"h2"
        self.assertEqual(negotiated_alpn(T()), "h2")
        self.assertIsNone(negotiated_alpn(object()))


class UnreachableTests(TestCase):
    """A fallback that cannot be reached closes the client's connection."""

    @defer.inlineCallbacks
    def test_closed_port(self) -> None:
        from tests.netutil import free_port
        from vtwist.testing.doubles import HalfCloseTransport

        fb = parse([{"dest": free_port()}])[0]
        t = HalfCloseTransport()
        link = hand_off(t, fb, b"GET / HTTP/1.1\r\n\r\n", reactor)
        for _ in range(100):
            if t.disconnecting:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(t.disconnecting)
        self.assertEqual(t.value(), b"")
        link.received(b"late")  # ignored
        link.lost(None)


class RetryTests(TestCase):
    """4.34 dials a fallback up to five times, 0/100/200/300 ms apart."""

    @defer.inlineCallbacks
    def test_target_that_comes_up_late(self) -> None:
        from tests.netutil import free_port
        from vtwist.testing.doubles import HalfCloseTransport

        port = free_port()
        box: dict = {"done": defer.Deferred()}
        listening: list = []
        reactor.callLater(0.15, lambda: listening.append(reactor.listenTCP(
            port, Factory.forProtocol(lambda: Recorder(box)), interface="127.0.0.1")))
        self.addCleanup(lambda: [p.stopListening() for p in listening])
        t = HalfCloseTransport()
        link = hand_off(t, parse([{"dest": port}])[0], GET, reactor)
        for _ in range(100):
            if link.relay is not None or t.disconnecting:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertIsNotNone(link.relay)
        self.assertGreater(link.attempts, 1)
        self.assertLessEqual(link.attempts, 5)
        link.lost(None)

    @defer.inlineCallbacks
    def test_five_attempts_then_close(self) -> None:
        from tests.netutil import free_port
        from vtwist.testing.doubles import HalfCloseTransport

        t = HalfCloseTransport()
        link = hand_off(t, parse([{"dest": free_port()}])[0], GET, reactor)
        for _ in range(100):
            if t.disconnecting:
                break
            yield deferLater(reactor, 0.02, lambda: None)
        self.assertTrue(t.disconnecting)
        self.assertEqual(link.attempts, 5)

    @defer.inlineCallbacks
    def test_client_gone_stops_retrying(self) -> None:
        from tests.netutil import free_port
        from vtwist.testing.doubles import HalfCloseTransport

        t = HalfCloseTransport()
        link = hand_off(t, parse([{"dest": free_port()}])[0], GET, reactor)
        yield deferLater(reactor, 0.05, lambda: None)
        link.lost(None)
        attempts = link.attempts
        yield deferLater(reactor, 0.8, lambda: None)
        self.assertEqual(link.attempts, attempts)
