"""SOCKS end to end on 127.0.0.1: the running service, curl, a real UDP client, half-close.

The proxy is the real :class:`~vtwist.service.VTwistService` built from a V2Ray-style config
(socks inbound, freedom outbound). Clients are curl (a subprocess) or blocking sockets run in a
thread, so the reactor keeps serving the proxy meanwhile. Every socket has a timeout.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import replace
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from vtwist.config.loader import parse_config
from vtwist.proxy.socks import codec
from vtwist.testing.doubles import LogCapture, UDPEcho

from .netutil import free_port, silent_port
from .services import serve_web, start_service

TIMEOUT = 10
BIG = os.urandom(1 << 20)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return bytes(data)


def recv_reply(sock: socket.socket) -> tuple[int, str, int]:
    head = recv_exactly(sock, 5)
    rest = {1: 5, 4: 17, 3: head[4] + 2}.get(head[3], 0)
    code, host, port, _ = codec.parse_reply(head + recv_exactly(sock, rest))
    return code, host, port


def socks_connect(port: int, host: str, target_port: int,
                  auth: tuple[bytes, bytes] | None = None) -> socket.socket:
    """A blocking SOCKS5 CONNECT through the proxy on ``port``."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    method = codec.METHOD_PASSWORD if auth else codec.METHOD_NO_AUTH
    sock.sendall(codec.client_greeting((method,)))
    assert recv_exactly(sock, 2) == bytes((5, method))
    if auth:
        sock.sendall(codec.client_credentials(*auth))
        assert recv_exactly(sock, 2) == b"\x01\x00"
    sock.sendall(codec.client_request(codec.CMD_CONNECT, host, target_port))
    code, _, _ = recv_reply(sock)
    assert code == 0, f"reply {code}"
    return sock


@implementer(IHalfCloseableProtocol)
class ReplyAfterEOF(Protocol):
    """Reads until the client's FIN, then answers with a digest and 1 MiB, then closes."""

    def connectionMade(self) -> None:
        self.received = hashlib.sha256()

    def dataReceived(self, data: bytes) -> None:
        self.received.update(data)

    def readConnectionLost(self) -> None:
        self.transport.write(self.received.digest())
        self.transport.write(BIG)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class ServiceTestBase(TestCase):
    timeout = 30
    settings: dict[str, Any] = {"auth": "noauth", "udp": True}

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.web_port = serve_web(self, {b"hello": b"hello through socks\n", b"big": BIG})
        self.socks_port = free_port()
        config = parse_config({
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "socks-in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": self.socks_port, "settings": self.settings}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}]})
        self.service = yield start_service(config, self)

    def curl(self, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return getProcessOutputAndValue(
            "curl", ["-sS", "--max-time", str(TIMEOUT), *args], env=dict(os.environ))


class CurlTests(ServiceTestBase):
    @defer.inlineCallbacks
    def test_socks5_hostname(self) -> Any:
        """curl sends the domain; the proxy resolves it (freedom AsIs)."""
        out, err, code = yield self.curl("--socks5-hostname", f"127.0.0.1:{self.socks_port}",
                                         f"http://localhost:{self.web_port}/hello")
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(out, b"hello through socks\n")

    @defer.inlineCallbacks
    def test_socks5_ip(self) -> Any:
        out, err, code = yield self.curl("--socks5", f"127.0.0.1:{self.socks_port}",
                                         f"http://127.0.0.1:{self.web_port}/big")
        self.assertEqual(code, 0, err)
        self.assertEqual(hashlib.sha256(out).digest(), hashlib.sha256(BIG).digest())

    @defer.inlineCallbacks
    def test_socks4a(self) -> Any:
        out, err, code = yield self.curl("--socks4a", f"127.0.0.1:{self.socks_port}",
                                         f"http://localhost:{self.web_port}/hello")
        self.assertEqual((code, out), (0, b"hello through socks\n"), err)

    @defer.inlineCallbacks
    def test_refused_target(self) -> Any:
        """A closed port: curl reports the proxy's "connection refused" reply (5)."""
        dead = free_port()
        logs = LogCapture()
        self.addCleanup(logs.stop)
        out, err, code = yield self.curl("--socks5", f"127.0.0.1:{self.socks_port}",
                                         f"http://127.0.0.1:{dead}/")
        self.assertEqual(code, 97)
        self.assertIn(b"(5)", err)
        # One line says why (besides the access line); no traceback.
        [line] = logs.lines()
        self.assertIn("connection refused", line)
        self.assertEqual(logs.failures(), [])

    @defer.inlineCallbacks
    def test_target_never_answers(self) -> Any:
        """A target whose accept queue is full drops SYNs: the connect timeout answers 6."""
        factory = self.service.inbound_services[0].factory
        factory.policy = replace(factory.policy, connect_timeout=0.5)
        silent = silent_port(self)
        logs = LogCapture()
        self.addCleanup(logs.stop)
        out, err, code = yield self.curl("--socks5", f"127.0.0.1:{self.socks_port}",
                                         f"http://127.0.0.1:{silent}/")
        self.assertEqual(code, 97)
        self.assertIn(b"(6)", err)
        # the policy's deadline, kept by the dial's own timer (freedom, an IP literal)
        [line] = logs.lines()
        self.assertIn("failed (timed out): no connection within 0.5s", line)

    @defer.inlineCallbacks
    def test_parallel(self) -> Any:
        results = yield defer.gatherResults([
            self.curl("--socks5-hostname", f"127.0.0.1:{self.socks_port}",
                      f"http://localhost:{self.web_port}/big") for _ in range(8)])
        for out, err, code in results:
            self.assertEqual(code, 0, err)
            self.assertEqual(len(out), len(BIG))


class HalfCloseTests(ServiceTestBase):
    @defer.inlineCallbacks
    def test_client_shuts_write_side(self) -> Any:
        """The client sends, shuts its write side, and still receives the whole reply."""
        server = reactor.listenTCP(0, Factory.forProtocol(ReplyAfterEOF), interface="127.0.0.1")
        self.addCleanup(server.stopListening)
        request = os.urandom(4_000_000)

        def client() -> bytes:
            with socks_connect(self.socks_port, "127.0.0.1", server.getHost().port) as sock:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                data = bytearray()
                while chunk := sock.recv(65536):
                    data += chunk
                return bytes(data)

        data = yield threads.deferToThread(client)
        self.assertEqual(len(data), 32 + len(BIG))
        self.assertEqual(data[:32], hashlib.sha256(request).digest())
        self.assertEqual(data[32:], BIG)


class AuthTests(ServiceTestBase):
    settings = {"auth": "password", "accounts": [{"user": "alice", "pass": "s3cret"}]}

    @defer.inlineCallbacks
    def test_accepted(self) -> Any:
        out, err, code = yield self.curl(
            "-x", f"socks5h://alice:s3cret@127.0.0.1:{self.socks_port}",
            f"http://localhost:{self.web_port}/hello")
        self.assertEqual((code, out), (0, b"hello through socks\n"), err)

    @defer.inlineCallbacks
    def test_rejected(self) -> Any:
        out, err, code = yield self.curl(
            "-x", f"socks5h://alice:wrong@127.0.0.1:{self.socks_port}",
            f"http://localhost:{self.web_port}/hello")
        self.assertEqual((code, out), (97, b""))
        self.assertIn(b"rejected", err.lower())

    @defer.inlineCallbacks
    def test_no_credentials(self) -> Any:
        out, err, code = yield self.curl("--socks5-hostname", f"127.0.0.1:{self.socks_port}",
                                         f"http://localhost:{self.web_port}/hello")
        self.assertEqual((code, out), (97, b""))


class UDPTests(ServiceTestBase):
    @defer.inlineCallbacks
    def test_udp_echo(self) -> Any:
        """A real UDP client: ASSOCIATE, datagrams to an echo server, replies back, then the
        association ends with its TCP connection."""
        echo = reactor.listenUDP(0, UDPEcho(lambda data: b"echo:" + data), interface="127.0.0.1",
                                 maxPacketSize=65535)
        self.addCleanup(echo.stopListening)
        echo_port = echo.getHost().port

        def client() -> tuple[list[codec.Datagram], str]:
            tcp = socket.create_connection(("127.0.0.1", self.socks_port), timeout=TIMEOUT)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.settimeout(TIMEOUT)
            try:
                tcp.sendall(codec.client_greeting() +
                            codec.client_request(codec.CMD_UDP_ASSOCIATE, "0.0.0.0", 0))
                assert recv_exactly(tcp, 2) == b"\x05\x00"
                code, host, port = recv_reply(tcp)
                assert code == 0, code
                udp.connect((host, port))
                replies = []
                for i in range(3):
                    udp.send(codec.build_datagram("127.0.0.1", echo_port, b"ping %d" % i))
                    replies.append(codec.parse_datagram(udp.recv(65535)))
                # A fragmented datagram is dropped; the next whole one still works.
                frag = bytearray(codec.build_datagram("127.0.0.1", echo_port, b"frag"))
                frag[2] = 1
                udp.send(bytes(frag))
                big = os.urandom(30000)
                udp.send(codec.build_datagram("localhost", echo_port, big))
                replies.append(codec.parse_datagram(udp.recv(65535)))
                tcp.close()
                # Once the control connection is gone, the association's socket closes.
                udp.settimeout(0.2)
                outcome = "open"
                for _ in range(25):
                    try:
                        udp.send(codec.build_datagram("127.0.0.1", echo_port, b"late"))
                        udp.recv(65535)
                    except ConnectionRefusedError:
                        outcome = "closed"
                        break
                    except TimeoutError:
                        continue
                return replies, outcome
            finally:
                tcp.close()
                udp.close()

        replies, outcome = yield threads.deferToThread(client)
        self.assertEqual(replies[:3], [codec.Datagram(0, "127.0.0.1", echo_port, b"echo:ping %d" % i)
                                       for i in range(3)])
        self.assertEqual(replies[3].host, "localhost")
        self.assertEqual(len(replies[3].payload), 30005)
        self.assertEqual(outcome, "closed")


class UDPDisabledTests(ServiceTestBase):
    settings = {"udp": False}

    @defer.inlineCallbacks
    def test_udp_disabled_reply(self) -> Any:
        def client() -> tuple[int, bytes]:
            with socket.create_connection(("127.0.0.1", self.socks_port), timeout=TIMEOUT) as s:
                s.sendall(codec.client_greeting() + codec.client_request(3, "0.0.0.0", 0))
                assert recv_exactly(s, 2) == b"\x05\x00"
                code, _, _ = recv_reply(s)
                return code, s.recv(1)

        self.assertEqual((yield threads.deferToThread(client)), (7, b""))


class RawClientTests(ServiceTestBase):
    @defer.inlineCallbacks
    def test_garbage_then_good_client(self) -> Any:
        """A client sending junk is closed without a reply; the next client is served."""

        def client() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", self.socks_port), timeout=TIMEOUT) as s:
                s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                junk_answer = s.recv(100)
            with socks_connect(self.socks_port, "127.0.0.1", self.web_port) as s:
                s.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
                data = bytearray()
                while chunk := s.recv(65536):
                    data += chunk
            return junk_answer, bytes(data)

        junk_answer, data = yield threads.deferToThread(client)
        self.assertEqual(junk_answer, b"")
        self.assertTrue(data.endswith(b"hello through socks\n"))

    @defer.inlineCallbacks
    def test_nagle_off_both_sides(self) -> Any:
        """Like V2Ray (Go's default), relayed sockets have TCP_NODELAY set."""
        sock = yield threads.deferToThread(socks_connect, self.socks_port, "127.0.0.1",
                                           self.web_port)
        self.addCleanup(sock.close)
        [protocol] = list(self.service.inbound_services[0].factory.connections)
        relay = protocol.tunnel.relay
        for transport in relay.transports:
            handle = transport.getHandle()
            self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @defer.inlineCallbacks
    def test_ipv6_target(self) -> Any:
        try:
            server = reactor.listenTCP(0, Factory.forProtocol(ReplyAfterEOF), interface="::1")
        except Exception as e:  # noqa: BLE001
            self.fail(f"IPv6 loopback unavailable: {e}")
        self.addCleanup(server.stopListening)

        def client() -> bytes:
            with socks_connect(self.socks_port, "::1", server.getHost().port) as s:
                s.shutdown(socket.SHUT_WR)
                return recv_exactly(s, 32)

        self.assertEqual((yield threads.deferToThread(client)), hashlib.sha256(b"").digest())

