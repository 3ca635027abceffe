"""The http inbound against the real V2Ray 4.34, in both roles, on loopback.

* curl -> vtwist http inbound -> VMess -> V2Ray VMess inbound -> freedom -> web/echo server
* curl -> V2Ray http inbound -> VMess -> vtwist VMess inbound -> freedom -> web/echo server

Each pairing: a plain GET (``curl -x``), a CONNECT (``curl -p -x``) and 20 MB each way through
CONNECT compared by sha256. Also: vtwist's and V2Ray's http inbounds answer a missing or
wrong credential the same way (407 with ``Proxy-Authenticate: Basic realm="proxy"``). Fails
(never skips) when /usr/bin/v2ray is missing.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Factory
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.http_helpers import TIMEOUT, HalfCloseEcho, connect_echo
from tests.interop.v2ray_runner import V2Ray
from tests.netutil import free_port
from tests.services import serve_web, start_service

USER = str(uuid.uuid4())
BIG = 20 * 1024 * 1024
PAGE = os.urandom(256 * 1024)


def vmess_inbound(port: int) -> dict[str, Any]:
    return {"tag": "vmess-in", "port": port, "listen": "127.0.0.1", "protocol": "vmess",
            "settings": {"clients": [{"id": USER, "alterId": 0, "email": "u@test"}]}}


def vmess_outbound(port: int) -> dict[str, Any]:
    return {"protocol": "vmess", "settings": {"vnext": [{
        "address": "127.0.0.1", "port": port,
        "users": [{"id": USER, "alterId": 0, "security": "aes-128-gcm"}]}]}}


def http_inbound(port: int, accounts: list[dict[str, str]] | None = None) -> dict[str, Any]:
    inbound: dict[str, Any] = {"tag": "http-in", "port": port, "listen": "127.0.0.1",
                               "protocol": "http"}
    if accounts:
        inbound["settings"] = {"accounts": accounts}
    return inbound


class _Pairing:
    """Tests for an http inbound on ``self.http_port`` that reaches a local web and echo
    server (a mixin: the pairings below are the TestCases)."""

    timeout = 180
    addCleanup: Any
    assertEqual: Any

    async def startChain(self) -> None:
        raise NotImplementedError

    def setUp(self) -> Any:
        self.web_port = serve_web(self, {b"page": PAGE})
        echo = reactor.listenTCP(0, Factory.forProtocol(HalfCloseEcho), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        self.echo_port = echo.getHost().port
        self.vmess_port = free_port()
        self.http_port = free_port()
        return defer.ensureDeferred(self.startChain())

    def startV2Ray(self, config: dict[str, Any], ports: list[int]) -> V2Ray:
        v2ray = V2Ray({"log": {"loglevel": "warning"}, **config}, ports)
        self.addCleanup(v2ray.stop)
        return v2ray

    def curl(self, *args: str) -> defer.Deferred[tuple[bytes, bytes, int]]:
        return getProcessOutputAndValue(
            "curl", ["-sS", "--max-time", str(TIMEOUT), *args], env=dict(os.environ))

    @defer.inlineCallbacks
    def test_curl_plain_get(self) -> Any:
        out, err, code = yield self.curl("-x", f"http://127.0.0.1:{self.http_port}",
                                         f"http://localhost:{self.web_port}/page")
        self.assertEqual(code, 0, err)
        self.assertEqual(hashlib.sha256(out).digest(), hashlib.sha256(PAGE).digest())

    @defer.inlineCallbacks
    def test_curl_connect(self) -> Any:
        out, err, code = yield self.curl("-p", "-x", f"http://127.0.0.1:{self.http_port}",
                                         f"http://127.0.0.1:{self.web_port}/page")
        self.assertEqual(code, 0, err)
        self.assertEqual(hashlib.sha256(out).digest(), hashlib.sha256(PAGE).digest())

    @defer.inlineCallbacks
    def test_connect_20mb_each_way(self) -> Any:
        sent, got = yield threads.deferToThread(connect_echo, self.http_port, "127.0.0.1",
                                                self.echo_port, BIG)
        self.assertEqual(sent, got)


class VTwistHttpToV2RayVMess(_Pairing, TestCase):
    """curl -> vtwist http inbound -> VMess -> V2Ray VMess server -> freedom."""

    async def startChain(self) -> None:
        self.startV2Ray({"inbounds": [vmess_inbound(self.vmess_port)],
                         "outbounds": [{"protocol": "freedom"}]}, [self.vmess_port])
        await start_service({"log": {"loglevel": "warning"},
                             "inbounds": [http_inbound(self.http_port)],
                             "outbounds": [vmess_outbound(self.vmess_port)]}, self)


class V2RayHttpToVTwistVMess(_Pairing, TestCase):
    """curl -> V2Ray http inbound -> VMess -> vtwist VMess server -> freedom."""

    async def startChain(self) -> None:
        await start_service({"log": {"loglevel": "warning"},
                             "inbounds": [vmess_inbound(self.vmess_port)],
                             "outbounds": [{"protocol": "freedom"}]}, self)
        self.startV2Ray({"inbounds": [http_inbound(self.http_port)],
                         "outbounds": [vmess_outbound(self.vmess_port)]}, [self.http_port])


class SameAuthAnswers(TestCase):
    """vtwist's and V2Ray's http inbounds with the same accounts answer curl alike."""

    timeout = 60

    @defer.inlineCallbacks
    def test_407_like_v2ray(self) -> Any:
        web_port = serve_web(self, {b"hello": b"hello\n"})
        accounts = [{"user": "alice", "pass": "s3cret"}]
        ours, theirs = free_port(), free_port()
        yield start_service({"log": {"loglevel": "warning"},
                             "inbounds": [http_inbound(ours, accounts)],
                             "outbounds": [{"protocol": "freedom"}]}, self)
        v2ray = V2Ray({"log": {"loglevel": "warning"},
                       "inbounds": [http_inbound(theirs, accounts)],
                       "outbounds": [{"protocol": "freedom"}]}, [theirs])
        self.addCleanup(v2ray.stop)
        url = f"http://127.0.0.1:{web_port}/hello"
        for extra in ([], ["--proxy-user", "alice:wrong"], ["--proxy-user", "alice:s3cret"]):
            answers = []
            for port in (ours, theirs):
                out, err, code = yield getProcessOutputAndValue("curl", [
                    "-s", "--max-time", str(TIMEOUT), "-D", "-", "-x",
                    f"http://127.0.0.1:{port}", *extra, url], env=dict(os.environ))
                status = out.split(b"\r\n", 1)[0]
                challenge = b'Proxy-Authenticate: Basic realm="proxy"' in out
                answers.append((status, challenge, out.endswith(b"hello\n")))
            self.assertEqual(answers[0], answers[1], extra)
