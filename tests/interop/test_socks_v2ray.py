"""Real V2Ray 4.34 as the SOCKS client of vtwist's socks inbound.

V2Ray listens with a dokodemo-door (TCP and UDP) that forwards to an echo server through its
``socks`` outbound, which points at vtwist (password auth). So V2Ray's own SOCKS5 client code
does the greeting, RFC 1929 auth, CONNECT and UDP ASSOCIATE against vtwist; the echo proves
the bytes made the round trip. A wrong password must make V2Ray's connection fail.
"""

from __future__ import annotations

import hashlib
import os
import socket
from typing import Any

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.netutil import free_port
from tests.services import start_service
from tests.socks_helpers import LogCapture
from vtwist.config.loader import parse_config

TIMEOUT = 10


def recv_all(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(262144, n - len(data)))
        if not chunk:
            break
        data += chunk
    return bytes(data)


class V2RayClientTests(TestCase):
    timeout = 60
    v2ray_password = "s3cret"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.socks_port = free_port()
        config = parse_config({
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "socks-in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": self.socks_port,
                          "settings": {"auth": "password", "udp": True,
                                       "accounts": [{"user": "alice", "pass": "s3cret"}]}}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}]})
        self.service = yield start_service(config, self)
        self.door = free_port(udp_too=True)
        self.v2ray = yield threads.deferToThread(V2Ray, {
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": self.door, "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": self.echo.port,
                                       "network": "tcp,udp"}}],
            "outbounds": [{"protocol": "socks", "settings": {"servers": [{
                "address": "127.0.0.1", "port": self.socks_port,
                "users": [{"user": "alice", "pass": self.v2ray_password}]}]}}],
        }, [self.door])
        self.addCleanup(self.v2ray.stop)

    def tcp_echo(self, size: int) -> bytes:
        payload = os.urandom(size)
        with socket.create_connection(("127.0.0.1", self.door), timeout=TIMEOUT) as s:
            s.sendall(payload)
            back = recv_all(s, size)
        return hashlib.sha256(back).digest() if back == payload else back[:64]

    def udp_echo(self, count: int) -> list[bytes]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.connect(("127.0.0.1", self.door))
            replies = []
            for i in range(count):
                message = b"datagram %d " % i + os.urandom(1000)
                for _attempt in range(3):  # UDP: V2Ray sets up the association on first use
                    s.send(message)
                    try:
                        replies.append(s.recv(65535) == message)
                        break
                    except TimeoutError:
                        continue
                else:
                    replies.append(False)
            return [bytes([r]) for r in replies]


class AcceptedTests(V2RayClientTests):
    @defer.inlineCallbacks
    def test_tcp_through_vtwist(self) -> Any:
        size = 4 << 20
        result = yield threads.deferToThread(self.tcp_echo, size)
        self.assertEqual(len(result), 32, f"echo mismatch: {result!r}\n{self.v2ray.output()}")

    @defer.inlineCallbacks
    def test_udp_through_vtwist(self) -> Any:
        replies = yield threads.deferToThread(self.udp_echo, 5)
        self.assertEqual(replies, [b"\x01"] * 5, self.v2ray.output())


class RejectedTests(V2RayClientTests):
    v2ray_password = "wrong"

    @defer.inlineCallbacks
    def test_wrong_password(self) -> Any:
        def attempt() -> bytes:
            with socket.create_connection(("127.0.0.1", self.door), timeout=TIMEOUT) as s:
                s.sendall(b"hello")
                try:
                    return s.recv(100)
                except ConnectionResetError:
                    return b""

        logs = LogCapture()
        self.addCleanup(logs.stop)
        self.assertEqual((yield threads.deferToThread(attempt)), b"")
        self.assertTrue(any("rejected socks: invalid username or password" in line
                            for line in logs.lines()), logs.lines())
