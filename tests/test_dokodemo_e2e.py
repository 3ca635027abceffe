"""dokodemo-door over real loopback sockets: TCP (20 MB each way, sha256) and UDP flows to
a local echo through freedom, a TCP-only and a UDP-only inbound, a refused destination, and
the access line."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from typing import Any

from twisted.internet import defer, threads
from twisted.logger import formatEvent
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer
from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.testing.doubles import LogCapture

TIMEOUT = 20
SIZE = 20 << 20


def door_config(port: int, target: int, network: str = "tcp,udp", **extra: Any) -> dict:
    """A config with one dokodemo-door on ``port`` to 127.0.0.1:``target`` and freedom."""
    settings = {"address": "127.0.0.1", "port": target, "network": network, **extra}
    return {"log": {"loglevel": "warning", "access": ""},
            "inbounds": [{"tag": "door", "protocol": "dokodemo-door", "listen": "127.0.0.1",
                          "port": port, "settings": settings}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}]}


def tcp_both_ways(port: int, size: int = SIZE) -> tuple[str, str, int]:
    """Send ``size`` random bytes while reading the echo; sha256 of both and bytes back."""
    payload = os.urandom(size)
    digest = hashlib.sha256()
    got = 0
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
        def send() -> None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        while True:
            chunk = s.recv(1 << 18)
            if not chunk:
                break
            digest.update(chunk)
            got += len(chunk)
        sender.join()
    return hashlib.sha256(payload).hexdigest(), digest.hexdigest(), got


def udp_round_trips(port: int, count: int, sock: socket.socket | None = None) -> list[bool]:
    """``count`` datagrams to ``port``; whether each one's echo came back intact."""
    own = sock is None
    s = sock or socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(2)
        results = []
        for i in range(count):
            message = b"datagram %d " % i + os.urandom(1200)
            s.sendto(message, ("127.0.0.1", port))
            try:
                results.append(s.recv(65535) == message)
            except TimeoutError:
                results.append(False)
        return results
    finally:
        if own:
            s.close()


class DokodemoEndToEnd(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.echo = EchoServer()  # TCP and UDP on one port, echoes until the client's FIN
        self.addCleanup(self.echo.stop)

    def start(self, network: str = "tcp,udp", target: int | None = None,
              **extra: Any) -> defer.Deferred[Any]:
        self.door = free_port(udp_too=True)
        return start_service(door_config(self.door, target or self.echo.port, network,
                                         **extra), self)

    @defer.inlineCallbacks
    def test_tcp_20mb_each_way(self) -> Any:
        """20 MB up and the same 20 MB echoed down, intact (sha256)."""
        yield self.start("tcp")
        sent, back, got = yield threads.deferToThread(tcp_both_ways, self.door)
        self.assertEqual(got, SIZE)
        self.assertEqual(sent, back)

    @defer.inlineCallbacks
    def test_udp_echo(self) -> Any:
        """Datagrams go to the fixed destination and the replies come back to the client."""
        yield self.start("udp")
        results = yield threads.deferToThread(udp_round_trips, self.door, 20)
        self.assertEqual(results, [True] * 20)

    @defer.inlineCallbacks
    def test_udp_flows_per_source(self) -> Any:
        """Two client sockets are two flows (two outbound sessions), each gets its replies."""
        service = yield self.start("udp")
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertEqual((yield threads.deferToThread(udp_round_trips, self.door, 3, a)),
                         [True] * 3)
        self.assertEqual((yield threads.deferToThread(udp_round_trips, self.door, 3, b)),
                         [True] * 3)
        factory = service.inbound_services[0].factory
        flows = [key for protocol in factory.datagrams for key in protocol.flows]
        self.assertEqual(sorted(client[1] for client, _ in flows),
                         sorted([a.getsockname()[1], b.getsockname()[1]]))

    @defer.inlineCallbacks
    def test_tcp_and_udp_on_one_port(self) -> Any:
        """``tcp,udp``: both listen on the same port number."""
        service = yield self.start("tcp,udp")
        self.assertEqual(len(service.inbound_services), 2)
        sent, back, got = yield threads.deferToThread(tcp_both_ways, self.door, 1 << 20)
        self.assertEqual((got, sent), (1 << 20, back))
        self.assertEqual((yield threads.deferToThread(udp_round_trips, self.door, 3)),
                         [True] * 3)

    @defer.inlineCallbacks
    def test_tcp_only_does_not_listen_on_udp(self) -> Any:
        service = yield self.start("tcp")
        self.assertEqual(len(service.inbound_services), 1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", self.door))  # free: nobody listens on UDP

    @defer.inlineCallbacks
    def test_udp_only_does_not_listen_on_tcp(self) -> Any:
        yield self.start("udp")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            self.assertNotEqual(s.connect_ex(("127.0.0.1", self.door)), 0)

    @defer.inlineCallbacks
    def test_refused_destination_closes_client(self) -> Any:
        """Nothing listens at the destination: the client's connection just closes."""
        dead = free_port()
        yield self.start("tcp", target=dead)

        def attempt() -> bytes:
            with socket.create_connection(("127.0.0.1", self.door), timeout=TIMEOUT) as s:
                s.sendall(b"hello")
                try:
                    return s.recv(100)
                except ConnectionResetError:
                    return b""

        self.assertEqual((yield threads.deferToThread(attempt)), b"")

    @defer.inlineCallbacks
    def test_access_line(self) -> Any:
        """One accepted access line per connection, naming the fixed destination, and one
        closed line with the bytes each way."""
        logs = LogCapture()
        self.addCleanup(logs.stop)
        yield self.start("tcp")
        yield threads.deferToThread(tcp_both_ways, self.door, 1000)
        target = self.echo.port

        def access() -> list[str]:
            return [formatEvent(e) for e in logs.events if e["log_namespace"] == "vtwist.access"]

        yield defer.ensureDeferred(wait_until(lambda: len(access()) >= 2, access))
        lines = access()
        self.assertEqual(len(lines), 2, lines)
        self.assertRegex(lines[0], rf"^from 127\.0\.0\.1:\d+ accepted tcp:127\.0\.0\.1:{target} "
                                   r"\[door >> direct\]$")
        self.assertRegex(lines[1], rf"^from 127\.0\.0\.1:\d+ closed tcp:127\.0\.0\.1:{target} "
                                   r"\[door >> direct\] up 1\.0 kB down 1\.0 kB \d+\.\d s$")

    @defer.inlineCallbacks
    def test_udp_idle_flow_closes(self) -> Any:
        """A flow with no traffic for the idle timeout (``timeout``) ends."""
        service = yield self.start("udp", timeout=1)
        yield threads.deferToThread(udp_round_trips, self.door, 1)
        protocol = service.inbound_services[0].factory.datagrams[0]
        self.assertEqual(len(protocol.flows), 1)
        yield threads.deferToThread(lambda: __import__("time").sleep(2.5))
        self.assertEqual(len(protocol.flows), 0)
