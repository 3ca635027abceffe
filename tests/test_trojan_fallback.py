"""Trojan fallbacks end to end: curl to a vtwist Trojan server reaches a local web server.

The server listens with TLS (and once on plain TCP); whatever is not a Trojan request of a
known user goes, with the bytes already read, to the fallback 4.34 would choose: by the TLS
ALPN, then by the path of the first HTTP request; ``xver`` puts a PROXY v1/v2 header first.
"""

from __future__ import annotations

import shutil
import struct
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.interop.transport_support import SERVER_NAME, TransportFixture
from tests.netutil import free_port
from tests.services import serve_web, start_service
from vtwist.address import Destination
from vtwist.proxy.trojan.codec import encode_request, password_key
from vtwist.testing.doubles import Recorder

CURL = shutil.which("curl") or "curl"
PASSWORD = "right password"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class _RecordingWeb(Protocol):
    """Keeps every byte; answers one HTTP/1 request with ``factory.body``; closes on an
    HTTP/2 preface."""

    def connectionMade(self) -> None:
        self.data = bytearray()
        self.factory.seen.append(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.data.startswith(b"PRI "):
            if len(self.data) >= len(PREFACE):
                self.transport.loseConnection()
        elif b"\r\n\r\n" in self.data[self.data.find(b"GET"):]:
            body = self.factory.body
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n%s" % (len(body), body))
            self.transport.loseConnection()


class TrojanFallbackTests(TestCase):
    """curl and raw clients against a vtwist Trojan server with fallbacks."""

    timeout = 60

    def setUp(self) -> None:
        self.fx = TransportFixture()
        self.addCleanup(self.fx.cleanup)

    def recorder(self, body: bytes) -> tuple[int, Any]:
        factory = Factory.forProtocol(_RecordingWeb)
        factory.seen = []  # type: ignore[attr-defined]
        factory.body = body  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, factory

    async def server(self, fallbacks: list[dict[str, Any]], tls: bool = True) -> int:
        port = free_port()
        stream = self.fx.settings("tls" if tls else "tcp", inbound=True)
        await start_service({
            "log": {"loglevel": "warning"},
            "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "trojan",
                          "settings": {"clients": [{"password": PASSWORD}],
                                       "fallbacks": fallbacks},
                          "streamSettings": stream}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        return port

    async def curl(self, port: int, path: str, *args: str, tls: bool = True
                   ) -> tuple[bytes, int]:
        scheme = "https" if tls else "http"
        argv = ["-sS", "--max-time", "10", "--resolve", f"{SERVER_NAME}:{port}:127.0.0.1",
                "--cacert", self.fx.ca_file, *args, f"{scheme}://{SERVER_NAME}:{port}{path}"]
        out, err, code = await getProcessOutputAndValue(CURL, argv)
        return out, code

    async def test_by_path_and_alpn_with_proxy_headers(self) -> None:
        """One server, five fallbacks: the default web site, one by path, two by path with
        PROXY v1 and v2, and one by ALPN h2."""
        web_a = serve_web(self, {b"page": b"page of site A", b"b": b"wrong site"})
        web_b = serve_web(self, {b"b": b"page of site B"})
        rec1, f1 = self.recorder(b"behind PROXY v1")
        rec2, f2 = self.recorder(b"behind PROXY v2")
        rec_h2, f_h2 = self.recorder(b"")
        port = await self.server([
            {"dest": web_a},
            {"path": "/b", "dest": f"127.0.0.1:{web_b}"},
            {"path": "/xv1", "dest": rec1, "xver": 1},
            {"path": "/xv2", "dest": rec2, "xver": 2},
            {"alpn": "h2", "dest": rec_h2},
        ])
        out, code = await self.curl(port, "/page", "--http1.1")
        self.assertEqual((out, code), (b"page of site A", 0))
        out, code = await self.curl(port, "/b", "--http1.1")
        self.assertEqual((out, code), (b"page of site B", 0))

        out, code = await self.curl(port, "/xv1", "--http1.1")
        self.assertEqual((out, code), (b"behind PROXY v1", 0))
        (seen,) = f1.seen
        line, _, request = bytes(seen).partition(b"\r\n")
        words = line.split(b" ")
        self.assertEqual(words[:4], [b"PROXY", b"TCP4", b"127.0.0.1", b"127.0.0.1"])
        self.assertEqual(int(words[5]), port)
        self.assertTrue(request.startswith(b"GET /xv1 HTTP/1.1\r\n"), request)

        out, code = await self.curl(port, "/xv2", "--http1.1")
        self.assertEqual((out, code), (b"behind PROXY v2", 0))
        (seen,) = f2.seen
        data = bytes(seen)
        self.assertTrue(data.startswith(V2_SIGNATURE + b"\x21\x11\x00\x0c"), data[:20])
        src, dst, sport, dport = struct.unpack(">4s4sHH", data[16:28])
        self.assertEqual((src, dst, dport), (b"\x7f\0\0\x01", b"\x7f\0\0\x01", port))
        self.assertTrue(data[28:].startswith(b"GET /xv2 HTTP/1.1\r\n"))

        # ALPN h2 picks its own row, whatever the path: the target sees curl's preface.
        await self.curl(port, "/page", "--http2")
        self.assertTrue(f_h2.seen)
        self.assertTrue(bytes(f_h2.seen[0]).startswith(PREFACE), f_h2.seen)
        self.assertEqual((len(f1.seen), len(f2.seen)), (1, 1))

    async def test_plain_tcp_and_wrong_password_exact_bytes(self) -> None:
        """Without TLS too; a Trojan request with a wrong password reaches the fallback
        byte for byte (nothing added, nothing lost)."""
        web = serve_web(self, {b"index": b"plain page"})
        port = await self.server([{"dest": web}], tls=False)
        out, code = await self.curl(port, "/index", tls=False)
        self.assertEqual((out, code), (b"plain page", 0))

        rec, factory = self.recorder(b"")
        port = await self.server([{"dest": rec}], tls=False)
        request = encode_request(password_key("wrong password"), 1,
                                 Destination.tcp("example.com", 443)) + b"payload \x00\xff"
        client = Recorder()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(lambda: client))
        client.transport.write(request)
        for _ in range(100):
            if factory.seen and len(factory.seen[0]) >= len(request):
                break
            await task.deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(bytes(factory.seen[0]), request)
        self.assertEqual(bytes(client.data), b"")
        client.transport.loseConnection()

    async def test_fallback_traffic_counted(self) -> None:
        """Bytes relayed to a fallback count toward the inbound's traffic counters (V2Ray
        4.34 counts every byte of an inbound's connections), not toward any outbound or
        user; the connection is open while it lasts."""
        from tests.netutil import wait_until

        rec, factory = self.recorder(b"fallback page")
        port = free_port()
        service = await start_service({
            "log": {"loglevel": "warning"}, "stats": {},
            "policy": {"system": {"statsInboundUplink": True,
                                  "statsInboundDownlink": True,
                                  "statsOutboundUplink": True,
                                  "statsOutboundDownlink": True}},
            "inbounds": [{"tag": "tr", "listen": "127.0.0.1", "port": port,
                          "protocol": "trojan",
                          "settings": {"clients": [{"password": PASSWORD, "email": "u@x"}],
                                       "fallbacks": [{"dest": rec}]}}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}]}, self)
        out, code = await self.curl(port, "/index", tls=False)
        self.assertEqual((out, code), (b"fallback page", 0))
        stats = service.tunnels.stats
        await wait_until(lambda: stats.active == 0, "the fallback connection ends")
        response = (b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n"
                    b"fallback page")
        self.assertEqual(stats.get("inbound>>>tr>>>traffic>>>uplink"),
                         len(factory.seen[0]))
        self.assertEqual(stats.get("inbound>>>tr>>>traffic>>>downlink"), len(response))
        self.assertEqual(stats.get("outbound>>>direct>>>traffic>>>uplink"), 0)
        self.assertEqual(stats.opened, 1)
