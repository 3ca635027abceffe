"""vtwist's socks and http outbounds against the real V2Ray 4.34, and V2Ray's against vtwist.

vtwist -> V2Ray: a SOCKS5 client enters vtwist's socks inbound, whose outbound (``socks`` or
``http``) points at one of V2Ray's socks or http inbounds (with and without accounts), which
go out by freedom to an echo server (plain TCP, and TLS). 20 MB each way compared by sha256; UDP through
vtwist's socks outbound (packet session alone, and UDP ASSOCIATE in -> socks out); a wrong
password on each protocol fails with its log line (407 quoted for http).

V2Ray -> vtwist: V2Ray's dokodemo-door forwards to the echo server through its ``socks``
outbound, pointed at vtwist's socks inbound (no auth), or its ``http`` outbound, pointed at
vtwist's http inbound (with and without accounts; a wrong password is refused), 20 MB each
way.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.trial.unittest import TestCase

from tests.interop.transport_support import TransportFixture
from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.address import Destination
from vtwist.proxy.socks.outbound import SocksOutbound
from vtwist.proxy.upstream import UpstreamServer, UpstreamSettings, UpstreamUser
from vtwist.testing.doubles import LogCapture

BIG = 20 * 1024 * 1024
SMALL = 512 * 1024
ACCOUNT = {"user": "alice", "pass": "s3cret"}


def _outbound(protocol: str, port: int, user: dict[str, str] | None) -> dict[str, Any]:
    server: dict[str, Any] = {"address": "127.0.0.1", "port": port}
    if user is not None:
        server["users"] = [dict(user)]
    return {"tag": "up", "protocol": protocol, "settings": {"servers": [server]}}


class VtwistToV2Ray(TestCase):
    """vtwist's socks/http outbounds pointed at V2Ray's socks/http inbounds."""

    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.tls = TransportFixture()
        self.addCleanup(self.tls.cleanup)
        self.ports = {name: free_port(udp_too=True) for name in
                      ("socks", "socks-auth", "http", "http-auth", "socks-tls", "http-tls")}
        tls_in = {"security": "tls", "tlsSettings": self.tls.tls_server()}
        inbounds = [
            {"tag": "socks", "protocol": "socks", "listen": "127.0.0.1",
             "port": self.ports["socks"],
             "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}},
            {"tag": "socks-auth", "protocol": "socks", "listen": "127.0.0.1",
             "port": self.ports["socks-auth"],
             "settings": {"auth": "password", "udp": True, "ip": "127.0.0.1",
                          "accounts": [ACCOUNT]}},
            {"tag": "http", "protocol": "http", "listen": "127.0.0.1",
             "port": self.ports["http"], "settings": {}},
            {"tag": "http-auth", "protocol": "http", "listen": "127.0.0.1",
             "port": self.ports["http-auth"], "settings": {"accounts": [ACCOUNT]}},
            {"tag": "socks-tls", "protocol": "socks", "listen": "127.0.0.1",
             "port": self.ports["socks-tls"], "streamSettings": tls_in,
             "settings": {"auth": "password", "accounts": [ACCOUNT]}},
            {"tag": "http-tls", "protocol": "http", "listen": "127.0.0.1",
             "port": self.ports["http-tls"], "streamSettings": tls_in,
             "settings": {"accounts": [ACCOUNT]}},
        ]
        self.v2ray = yield threads.deferToThread(
            V2Ray, {"log": {"loglevel": "warning"}, "inbounds": inbounds,
                    "outbounds": [{"protocol": "freedom"}]}, list(self.ports.values()))
        self.addCleanup(self.v2ray.stop)

    @defer.inlineCallbacks
    def start_vtwist(self, outbound: dict[str, Any]) -> Any:
        """vtwist with a socks inbound (UDP on) whose only outbound is ``outbound``."""
        self.socks_in = free_port(udp_too=True)
        yield start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": self.socks_in,
                          "settings": {"udp": True, "ip": "127.0.0.1"}}],
            "outbounds": [outbound]}, self)

    @defer.inlineCallbacks
    def echo_both_ways(self, size: int) -> Any:
        sent, got, _ = yield defer.Deferred.fromCoroutine(socks_echo(
            reactor, self.socks_in, "127.0.0.1", self.echo.port, size))
        self.assertEqual(sent, got, self.v2ray.output())

    # -- socks outbound ----------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_socks_outbound_no_auth_20mb(self) -> Any:
        yield self.start_vtwist(_outbound("socks", self.ports["socks"], None))
        yield self.echo_both_ways(BIG)

    @defer.inlineCallbacks
    def test_socks_outbound_password(self) -> Any:
        yield self.start_vtwist(_outbound("socks", self.ports["socks-auth"], ACCOUNT))
        yield self.echo_both_ways(SMALL)

    @defer.inlineCallbacks
    def test_socks_outbound_domain_and_ipv6_targets(self) -> Any:
        yield self.start_vtwist(_outbound("socks", self.ports["socks-auth"], ACCOUNT))
        for host in ("localhost", "::1"):
            sent, got, _ = yield defer.Deferred.fromCoroutine(socks_echo(
                reactor, self.socks_in, host, self.echo.port, SMALL))
            self.assertEqual(sent, got, host)

    @defer.inlineCallbacks
    def test_socks_outbound_wrong_password(self) -> Any:
        yield self.start_vtwist(_outbound("socks", self.ports["socks-auth"],
                                          {"user": "alice", "pass": "wrong"}))
        logs = LogCapture()
        self.addCleanup(logs.stop)
        with self.assertRaises(RuntimeError):  # the inbound's SOCKS reply says failure
            yield defer.Deferred.fromCoroutine(socks_echo(
                reactor, self.socks_in, "127.0.0.1", self.echo.port, 1000))
        self.assertTrue(any("socks handshake with 127.0.0.1:" in line and
                            "server rejects the user name or password" in line
                            for line in logs.lines()), logs.lines())

    @defer.inlineCallbacks
    def test_socks_udp_associate_in_to_socks_out(self) -> Any:
        """SOCKS UDP ASSOCIATE at vtwist -> socks outbound -> V2Ray socks (udp) -> echo."""
        yield self.start_vtwist(_outbound("socks", self.ports["socks-auth"], ACCOUNT))
        payloads = [b"datagram %d " % i + os.urandom(1200) for i in range(10)]
        got = yield defer.Deferred.fromCoroutine(socks_udp_echo(
            reactor, self.socks_in, "127.0.0.1", self.echo.port, payloads))
        self.assertEqual(got, payloads, self.v2ray.output())

    @defer.inlineCallbacks
    def test_socks_packet_session(self) -> Any:
        """The outbound's packet session alone: datagrams to the echo come back with their
        source, through V2Ray's socks inbound (no auth and password)."""
        yield self.packet_session_echo(self.ports["socks"], [])
        yield self.packet_session_echo(self.ports["socks-auth"],
                                       [UpstreamUser("alice", "s3cret")])

    @defer.inlineCallbacks
    def packet_session_echo(self, port: int, users: list[UpstreamUser]) -> Any:
        outbound = SocksOutbound(reactor, "up", UpstreamSettings(
            [UpstreamServer("127.0.0.1", port, users)]))
        got: defer.DeferredQueue[tuple[bytes, Destination]] = defer.DeferredQueue()
        closed: list[bool] = []
        session = outbound.packetSession(lambda d, s: got.put((d, s)),
                                         lambda: closed.append(True))
        echo = Destination.udp("127.0.0.1", self.echo.port)
        for i in range(5):  # sent at once: they wait for the association
            session.send(b"ping %d" % i, echo)
        replies = []
        for _ in range(5):
            replies.append((yield got.get().addTimeout(10, reactor)))
        self.assertEqual(sorted(replies), [(b"ping %d" % i, echo) for i in range(5)])
        session.close()
        self.assertEqual(closed, [])

    # -- http outbound -----------------------------------------------------------------------
    @defer.inlineCallbacks
    def test_http_outbound_no_auth_20mb(self) -> Any:
        yield self.start_vtwist(_outbound("http", self.ports["http"], None))
        yield self.echo_both_ways(BIG)

    @defer.inlineCallbacks
    def test_http_outbound_password_20mb(self) -> Any:
        yield self.start_vtwist(_outbound("http", self.ports["http-auth"], ACCOUNT))
        yield self.echo_both_ways(BIG)

    @defer.inlineCallbacks
    def test_http_outbound_over_tls_20mb(self) -> Any:
        """V2Ray's TLS offers h2 and http/1.1; vtwist asks for http/1.1 and CONNECTs."""
        outbound = _outbound("http", self.ports["http-tls"], ACCOUNT)
        outbound["streamSettings"] = {"security": "tls", "tlsSettings": self.tls.tls_client()}
        yield self.start_vtwist(outbound)
        yield self.echo_both_ways(BIG)

    @defer.inlineCallbacks
    def test_socks_outbound_over_tls(self) -> Any:
        outbound = _outbound("socks", self.ports["socks-tls"], ACCOUNT)
        outbound["streamSettings"] = {"security": "tls", "tlsSettings": self.tls.tls_client()}
        yield self.start_vtwist(outbound)
        yield self.echo_both_ways(SMALL)

    @defer.inlineCallbacks
    def test_http_outbound_chained_through_socks_outbound(self) -> Any:
        """proxySettings: the http outbound reaches V2Ray's http inbound through the socks
        outbound (V2Ray's socks inbound), then CONNECTs to the echo."""
        self.socks_in = free_port(udp_too=True)
        http_out = _outbound("http", self.ports["http-auth"], ACCOUNT)
        http_out["proxySettings"] = {"tag": "hop"}
        socks_out = _outbound("socks", self.ports["socks-auth"], ACCOUNT)
        socks_out["tag"] = "hop"
        yield start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [{"tag": "in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": self.socks_in}],
            "outbounds": [http_out, socks_out]}, self)
        yield self.echo_both_ways(SMALL)
        hop = f"accepted tcp:127.0.0.1:{self.ports['http-auth']}"
        self.assertIn(hop, self.v2ray.output())  # V2Ray's socks inbound carried the hop

    @defer.inlineCallbacks
    def test_http_outbound_wrong_password_407(self) -> Any:
        yield self.start_vtwist(_outbound("http", self.ports["http-auth"],
                                          {"user": "alice", "pass": "wrong"}))
        logs = LogCapture()
        self.addCleanup(logs.stop)
        with self.assertRaises(RuntimeError):  # the inbound's SOCKS reply says failure
            yield defer.Deferred.fromCoroutine(socks_echo(
                reactor, self.socks_in, "127.0.0.1", self.echo.port, 1000))
        self.assertTrue(any(f"proxy refused CONNECT 127.0.0.1:{self.echo.port}: HTTP/1.1 407"
                            in line for line in logs.lines()), logs.lines())

    @defer.inlineCallbacks
    def test_http_outbound_udp_dropped(self) -> Any:
        """No UDP through the http outbound: the association's datagrams get no answer."""
        yield self.start_vtwist(_outbound("http", self.ports["http"], None))
        logs = LogCapture()
        self.addCleanup(logs.stop)
        with self.assertRaises(defer.TimeoutError):
            yield defer.Deferred.fromCoroutine(socks_udp_echo(
                reactor, self.socks_in, "127.0.0.1", self.echo.port, [b"x"], timeout=1))
        self.assertTrue(any("carries no UDP" in line for line in logs.lines()), logs.lines())


def _blocking_echo(port: int, size: int) -> tuple[str, str]:
    """``size`` random bytes to 127.0.0.1:``port`` and back (sender in a thread)."""
    block = os.urandom(1 << 20)
    sent, got = hashlib.sha256(), hashlib.sha256()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        def send() -> None:
            left = size
            while left:
                piece = block[:min(left, len(block))]
                s.sendall(piece)
                sent.update(piece)
                left -= len(piece)

        sender = threading.Thread(target=send)
        sender.start()
        received = 0
        while received < size:
            data = s.recv(1 << 18)
            if not data:
                break
            got.update(data)
            received += len(data)
        sender.join()
    return sent.hexdigest(), got.hexdigest()


class V2RayToVtwist(TestCase):
    """V2Ray's socks outbound (no auth) pointed at vtwist's socks inbound: 20 MB each way."""

    timeout = 120

    @defer.inlineCallbacks
    def test_v2ray_socks_outbound_no_auth_20mb(self) -> Any:
        echo = EchoServer()
        self.addCleanup(echo.stop)
        socks_in = free_port()
        yield start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "port": socks_in}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        door = free_port()
        v2ray = yield threads.deferToThread(V2Ray, {
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": door, "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": echo.port,
                                       "network": "tcp"}}],
            "outbounds": [{"protocol": "socks", "settings": {"servers": [
                {"address": "127.0.0.1", "port": socks_in}]}}]}, [door])
        self.addCleanup(v2ray.stop)
        sent, got = yield threads.deferToThread(_blocking_echo, door, BIG)
        self.assertEqual(sent, got, v2ray.output())


class V2RayHTTPToVtwist(TestCase):
    """V2Ray's http outbound pointed at vtwist's http inbound."""

    timeout = 120

    @defer.inlineCallbacks
    def run_through(self, accounts: list[dict[str, str]], user: dict[str, str] | None,
                    size: int) -> Any:
        echo = EchoServer()
        self.addCleanup(echo.stop)
        http_in = free_port()
        yield start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [{"protocol": "http", "listen": "127.0.0.1", "port": http_in,
                          "settings": {"accounts": accounts} if accounts else {}}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        door = free_port()
        v2ray = yield threads.deferToThread(V2Ray, {
            "log": {"loglevel": "info"},
            "inbounds": [{"listen": "127.0.0.1", "port": door, "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": echo.port,
                                       "network": "tcp"}}],
            "outbounds": [_outbound("http", http_in, user)]}, [door])
        self.addCleanup(v2ray.stop)
        result = yield threads.deferToThread(_blocking_echo, door, size)
        return result, v2ray

    @defer.inlineCallbacks
    def test_no_auth_20mb(self) -> Any:
        (sent, got), v2ray = yield self.run_through([], None, BIG)
        self.assertEqual(sent, got, v2ray.output())

    @defer.inlineCallbacks
    def test_password_20mb(self) -> Any:
        (sent, got), v2ray = yield self.run_through([ACCOUNT], ACCOUNT, BIG)
        self.assertEqual(sent, got, v2ray.output())

    @defer.inlineCallbacks
    def test_wrong_password_refused(self) -> Any:
        (sent, got), v2ray = yield self.run_through(
            [ACCOUNT], {"user": "alice", "pass": "wrong"}, 1000)
        self.assertEqual(got, hashlib.sha256().hexdigest())  # nothing came back
        self.assertNotEqual(sent, got)
        yield defer.Deferred.fromCoroutine(wait_until(
            lambda: "Proxy responded with non 200 code: 407" in v2ray.output(),
            lambda: f"V2Ray did not log the 407:\n{v2ray.output()}", 10))
