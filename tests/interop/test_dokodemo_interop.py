"""dokodemo-door interop with the real V2Ray 4.34, both roles, over VMess on loopback.

* V2Ray's dokodemo-door -> VMess -> vtwist's VMess server -> freedom -> echo
* vtwist's dokodemo-door -> VMess -> V2Ray's VMess server -> freedom -> echo

Each: 20 MB each way over TCP (sha256), and UDP datagrams echoed through the door.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.netutil import free_port
from tests.services import start_service
from tests.test_dokodemo_e2e import SIZE, tcp_both_ways

USER = str(uuid.uuid4())


def vmess_server(port: int) -> dict[str, Any]:
    return {"tag": "vmess-in", "listen": "127.0.0.1", "port": port, "protocol": "vmess",
            "settings": {"clients": [{"id": USER, "alterId": 0}]}}


def vmess_client(port: int) -> dict[str, Any]:
    return {"protocol": "vmess", "settings": {"vnext": [{
        "address": "127.0.0.1", "port": port,
        "users": [{"id": USER, "alterId": 0, "security": "aes-128-gcm"}]}]}}


def door(port: int, target: int) -> dict[str, Any]:
    return {"tag": "door", "listen": "127.0.0.1", "port": port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": target, "network": "tcp,udp"}}


def udp_echoes(port: int, count: int) -> list[bool]:
    """``count`` datagrams through the door; the first may wait for the VMess session."""
    results = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for i in range(count):
            message = b"datagram %d " % i + os.urandom(1000)
            for _attempt in range(3):
                s.sendto(message, ("127.0.0.1", port))
                try:
                    reply = s.recv(65535)
                except TimeoutError:
                    continue
                results.append(reply == message)
                break
            else:
                results.append(False)
    return results


class _Door(TestCase):
    timeout = 180

    def setUp(self) -> None:
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.door = free_port(udp_too=True)
        self.server = free_port()

    @defer.inlineCallbacks
    def check_tcp(self) -> Any:
        sent, back, got = yield threads.deferToThread(tcp_both_ways, self.door)
        self.assertEqual((got, back), (SIZE, sent), self.v2ray.output())

    @defer.inlineCallbacks
    def check_udp(self) -> Any:
        results = yield threads.deferToThread(udp_echoes, self.door, 5)
        self.assertEqual(results, [True] * 5, self.v2ray.output())


class V2RayDoorToVtwist(_Door):
    """V2Ray's dokodemo-door and VMess client, vtwist's VMess server."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        yield start_service({"inbounds": [vmess_server(self.server)],
                             "outbounds": [{"protocol": "freedom"}]}, self)
        self.v2ray = yield threads.deferToThread(V2Ray, {
            "log": {"loglevel": "warning"},
            "inbounds": [door(self.door, self.echo.port)],
            "outbounds": [vmess_client(self.server)]}, [self.door])
        self.addCleanup(self.v2ray.stop)

    def test_tcp_20mb_each_way(self) -> Any:
        return self.check_tcp()

    def test_udp(self) -> Any:
        return self.check_udp()


class VtwistDoorToV2Ray(_Door):
    """vtwist's dokodemo-door and VMess client, V2Ray's VMess server."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        self.v2ray = yield threads.deferToThread(V2Ray, {
            "log": {"loglevel": "warning"},
            "inbounds": [vmess_server(self.server)],
            "outbounds": [{"protocol": "freedom"}]}, [self.server])
        self.addCleanup(self.v2ray.stop)
        yield start_service({"inbounds": [door(self.door, self.echo.port)],
                             "outbounds": [vmess_client(self.server)]}, self)

    def test_tcp_20mb_each_way(self) -> Any:
        return self.check_tcp()

    def test_udp(self) -> Any:
        return self.check_udp()
