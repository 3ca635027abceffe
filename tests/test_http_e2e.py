"""The http inbound end to end on 127.0.0.1: the running service, real clients (curl, urllib,
twisted.web's ProxyAgent, raw sockets), local web servers and an echo server.

The proxy is the real service built from a V2Ray-style config (an http inbound without and
one with accounts, freedom outbound). Blocking clients run in a thread so the reactor keeps
serving the proxy meanwhile; every socket and curl has a timeout.
"""

from __future__ import annotations

import hashlib
import os
import socket
import urllib.request
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import ProxyAgent, readBody
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.static import Data

from vtwist.testing.doubles import LogCapture

from .http_helpers import TIMEOUT, HalfCloseEcho, connect_echo, read_response
from .netutil import free_port
from .services import start_service

BIG = os.urandom(1 << 20)
UPLOAD = os.urandom(3 << 20)


class EchoBody(Resource):
    """POST/PUT: answers with the sha256 of the body and the request's framing headers."""

    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        body = request.content.read()  # type: ignore[union-attr]
        te = request.getHeader(b"transfer-encoding") or b"-"
        proxied = request.getHeader(b"proxy-authorization") or b"-"
        return b"%s %d %s %s" % (hashlib.sha256(body).hexdigest().encode(), len(body), te,
                                 proxied)

    render_PUT = render_POST


def web_server(test: TestCase, marker: bytes) -> int:
    root = Resource()
    root.putChild(b"hello", Data(b"hello from " + marker + b"\n", "text/plain"))
    root.putChild(b"big", Data(BIG, "application/octet-stream"))
    root.putChild(b"echo", EchoBody())
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return port.getHost().port  # type: ignore[no-any-return]


class HttpE2ETests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.web_a = web_server(self, b"a")
        self.web_b = web_server(self, b"b")
        echo = reactor.listenTCP(0, Factory.forProtocol(HalfCloseEcho), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        self.echo_port = echo.getHost().port
        self.port = free_port()
        self.auth_port = free_port()
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        self.service = yield start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [
                {"tag": "http-in", "protocol": "http", "listen": "127.0.0.1",
                 "port": self.port},
                {"tag": "http-auth", "protocol": "http", "listen": "127.0.0.1",
                 "port": self.auth_port,
                 "settings": {"accounts": [{"user": "alice", "pass": "s3cret"}]}}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}]}, self)

    def curl(self, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return getProcessOutputAndValue(
            "curl", ["-sS", "--max-time", str(TIMEOUT), *args], env=dict(os.environ))

    def proxy(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}"

    def accessLines(self) -> list[str]:
        """Accepted and rejected lines (not the closed ones)."""
        return [e["line"] for e in self.logs.events
                if e.get("log_namespace") == "vtwist.access" and e.get("status") != "closed"]

    def closedLines(self) -> list[str]:
        """The closed lines, with bytes and duration."""
        return [e["line"] for e in self.logs.events if e.get("status") == "closed"]

    # -- curl ---------------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_curl_plain_get(self) -> Any:
        out, err, code = yield self.curl("-x", self.proxy(),
                                         f"http://localhost:{self.web_a}/hello")
        self.assertEqual((code, err, out), (0, b"", b"hello from a\n"))
        self.assertIn(f"accepted tcp:localhost:{self.web_a} [http-in >> direct]",
                      self.accessLines()[0])

    @defer.inlineCallbacks
    def test_curl_plain_get_big(self) -> Any:
        out, err, code = yield self.curl("-x", self.proxy(), f"http://127.0.0.1:{self.web_a}/big")
        self.assertEqual(code, 0, err)
        self.assertEqual(hashlib.sha256(out).digest(), hashlib.sha256(BIG).digest())

    @defer.inlineCallbacks
    def test_curl_connect(self) -> Any:
        out, err, code = yield self.curl("-p", "-x", self.proxy(),
                                         f"http://127.0.0.1:{self.web_a}/big")
        self.assertEqual(code, 0, err)
        self.assertEqual(hashlib.sha256(out).digest(), hashlib.sha256(BIG).digest())

    @defer.inlineCallbacks
    def test_curl_two_hosts_one_connection(self) -> Any:
        out, err, code = yield self.curl("-v", "-x", self.proxy(),
                                         f"http://127.0.0.1:{self.web_a}/hello",
                                         f"http://localhost:{self.web_b}/hello")
        self.assertEqual(code, 0, err)
        self.assertEqual(out, b"hello from a\nhello from b\n")
        self.assertIn(b"Re-using existing connection", err)
        self.assertEqual(len(self.accessLines()), 2)
        # each request's own connection has its closed line: request and response bytes
        closed = self.closedLines()
        self.assertEqual(len(closed), 2, closed)
        self.assertRegex(closed[0], rf"closed tcp:127\.0\.0\.1:{self.web_a} \[.*\] "
                                    r"up \d+ B down \d+ B \d+\.\d s")
        self.assertIn(f"closed tcp:localhost:{self.web_b} ", closed[1])

    @defer.inlineCallbacks
    def test_curl_chunked_upload(self) -> Any:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(UPLOAD)
        out, err, code = yield self.curl(
            "-x", self.proxy(), "-H", "Transfer-Encoding: chunked", "--data-binary",
            f"@{path}", f"http://127.0.0.1:{self.web_a}/echo")
        self.assertEqual(code, 0, err)
        digest, length, te, proxied = out.split()
        self.assertEqual((digest, int(length)),
                         (hashlib.sha256(UPLOAD).hexdigest().encode(), len(UPLOAD)))
        self.assertEqual(te, b"chunked")
        self.assertEqual(proxied, b"-")

    @defer.inlineCallbacks
    def test_curl_content_length_upload(self) -> Any:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(UPLOAD)
        out, err, code = yield self.curl(
            "-x", self.proxy(self.auth_port), "--proxy-user", "alice:s3cret", "-T", path,
            f"http://127.0.0.1:{self.web_a}/echo")
        self.assertEqual(code, 0, err)
        digest, length, te, proxied = out.split()
        self.assertEqual((digest, int(length), te, proxied),
                         (hashlib.sha256(UPLOAD).hexdigest().encode(), len(UPLOAD), b"-", b"-"))
        self.assertIn("email: alice", self.accessLines()[0])

    @defer.inlineCallbacks
    def test_curl_refused_is_502(self) -> Any:
        dead = free_port()
        out, err, code = yield self.curl("-p", "-x", self.proxy(), f"http://127.0.0.1:{dead}/")
        self.assertEqual(code, 56)
        self.assertIn(b"502", err)
        out, err, code = yield self.curl("-s", "-o", "/dev/null", "-w", "%{http_code}",
                                         "-x", self.proxy(), f"http://127.0.0.1:{dead}/")
        self.assertEqual(out, b"502")
        self.assertEqual(self.logs.failures(), [])

    # -- authentication -------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_407_without_and_with_wrong_credentials(self) -> Any:
        url = f"http://127.0.0.1:{self.web_a}/hello"
        for extra in ([], ["--proxy-user", "alice:wrong"], ["--proxy-user", "bob:s3cret"]):
            out, err, code = yield self.curl("-s", "-o", "/dev/null", "-D", "-",
                                             "-x", self.proxy(self.auth_port), *extra, url)
            self.assertTrue(out.startswith(b"HTTP/1.1 407 Proxy Authentication Required"), out)
            self.assertIn(b'Proxy-Authenticate: Basic realm="proxy"', out)
        out, err, code = yield self.curl("-p", "-x", self.proxy(self.auth_port), url)
        self.assertEqual(code, 56)
        self.assertIn(b"407", err)
        rejected = [line for line in self.accessLines() if " rejected http: " in line]
        self.assertEqual(len(rejected), 4)

    @defer.inlineCallbacks
    def test_right_credentials(self) -> Any:
        url = f"http://127.0.0.1:{self.web_a}/hello"
        for extra in ([], ["-p"]):
            out, err, code = yield self.curl(*extra, "-x", self.proxy(self.auth_port),
                                             "--proxy-user", "alice:s3cret", url)
            self.assertEqual((code, out), (0, b"hello from a\n"), err)
        self.assertTrue(all("email: alice" in line for line in self.accessLines()))

    # -- other clients ----------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_urllib_proxy_handler(self) -> Any:
        def fetch() -> bytes:
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({"http": self.proxy()}))
            with opener.open(f"http://localhost:{self.web_b}/big", timeout=TIMEOUT) as r:
                return r.read()  # type: ignore[no-any-return]
        body = yield threads.deferToThread(fetch)
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(BIG).digest())

    @defer.inlineCallbacks
    def test_twisted_proxy_agent(self) -> Any:
        agent = ProxyAgent(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port))
        for web, marker in ((self.web_a, b"a"), (self.web_b, b"b")):
            response = yield agent.request(b"GET", f"http://localhost:{web}/hello".encode())
            body = yield readBody(response)
            self.assertEqual((response.code, body), (200, b"hello from " + marker + b"\n"))

    # -- raw sockets --------------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_keep_alive_across_hosts_raw(self) -> Any:
        """Three requests to two hosts on one client connection, the last one pipelined."""
        def run() -> list[tuple[bytes, bytes]]:
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
                out = []
                s.sendall(f"GET http://127.0.0.1:{self.web_a}/hello HTTP/1.1\r\n"
                          f"Host: 127.0.0.1:{self.web_a}\r\n\r\n".encode())
                out.append(read_response(s))
                s.sendall(f"GET http://localhost:{self.web_b}/hello HTTP/1.1\r\n"
                          f"Host: localhost:{self.web_b}\r\n\r\n"
                          f"HEAD http://localhost:{self.web_a}/big HTTP/1.1\r\n"
                          f"Host: localhost:{self.web_a}\r\nConnection: close\r\n\r\n".encode())
                extra: list[bytes] = []
                out.append(read_response(s, rest=extra))
                rest = extra[0]  # the pipelined response may have come in the same read
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                out.append((rest, b""))
                return out
        (h1, b1), (h2, b2), (h3, _) = yield threads.deferToThread(run)
        self.assertTrue(h1.startswith(b"HTTP/1.1 200"))
        self.assertEqual((b1, b2), (b"hello from a\n", b"hello from b\n"))
        self.assertTrue(h3.startswith(b"HTTP/1.1 200"))
        self.assertIn(b"Content-Length: %d" % len(BIG), h3)
        self.assertTrue(h3.endswith(b"\r\n\r\n"))  # HEAD: no body, then the close
        self.assertEqual(len(self.accessLines()), 3)

    @defer.inlineCallbacks
    def test_bad_input_answers(self) -> Any:
        def ask(data: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT) as s:
                s.sendall(data)
                got = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return got
                    got += chunk
        cases = [
            (b"NONSENSE\r\n\r\n", b"400"),
            (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
            (b"CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"400"),
            (b"GET http://a/ HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"p" * 70000 + b"\r\n\r\n",
             b"431"),
        ]
        for data, status in cases:
            answer = yield threads.deferToThread(ask, data)
            self.assertTrue(answer.startswith(b"HTTP/1.1 " + status), (data[:40], answer))
        self.assertEqual(self.logs.failures(), [])
        self.assertEqual(len([line for line in self.accessLines() if "rejected http" in line]),
                         len(cases))

    @defer.inlineCallbacks
    def test_connect_echo_sha256(self) -> Any:
        sent, got = yield threads.deferToThread(connect_echo, self.port, "127.0.0.1",
                                                self.echo_port, 8 << 20)
        self.assertEqual(sent, got)
