"""Transports on real 127.0.0.1 sockets: vtwist server endpoint <-> vtwist client endpoint.

Echo through every combination, the PROXY protocol behind each inbound kind, and bad input
(TLS garbage, stalled handshakes): one log line, a clean close, and the next client served.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from tests.interop.transport_support import TransportTestCase, stream_settings
from vtwist.testing.doubles import CollectUntilClosed, Echo, log_lines
from vtwist.transport import stack
from vtwist.transport.layer import Layer, LayerClientEndpoint, LayerHandshakeError
from vtwist.transport.tls import layer as tls
from vtwist.transport.ws import layer as ws

SIZE = 1024 * 1024


class PeerReporter(Protocol):
    """Answers the first bytes with the peer address the transport reports."""

    def dataReceived(self, data: bytes) -> None:
        peer = self.transport.getPeer()
        self.transport.write(f"{peer.host}:{peer.port}".encode())


class ProxyHeaderLayer(Layer):
    """Client side of a load balancer: a PROXY v1 line, then the stream."""

    name = "proxy"

    def handshakeStarted(self) -> None:
        self.transport.write(b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 443\r\n")
        self.handshakeDone()


def Collect(message: bytes = b"who am i") -> CollectUntilClosed:
    """Sends ``message``, keeps the first answer, closes."""
    return CollectUntilClosed(message, hangUpOnData=True)


class EchoTests(TransportTestCase):
    """1 MB each way through each transport stack, vtwist on both ends."""

    async def echo(self, kind: str) -> None:
        server = stream_settings(self.fx.settings(kind, inbound=True), inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, server),
                                 Factory.forProtocol(Echo))
        client = stream_settings(self.fx.settings(kind, inbound=False), inbound=False)
        endpoint = stack.client_endpoint(reactor, "127.0.0.1", port.getHost().port, client)
        await self.transfer(endpoint, SIZE)

    async def test_tcp(self) -> None:
        await self.echo("tcp")

    async def test_tls(self) -> None:
        await self.echo("tls")

    async def test_ws(self) -> None:
        await self.echo("ws")

    async def test_wss(self) -> None:
        await self.echo("wss")

    async def test_http_header(self) -> None:
        await self.echo("http")

    async def test_http_header_tls(self) -> None:
        await self.echo("https")

    async def test_alpn(self) -> None:
        server = stream_settings(self.fx.settings("tls", inbound=True), inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, server),
                                 Factory.forProtocol(Echo))
        client = stream_settings(self.fx.settings("tls", inbound=False), inbound=False)
        endpoint = stack.client_endpoint(reactor, "127.0.0.1", port.getHost().port, client)
        app = await endpoint.connect(Factory.forProtocol(Collect))
        self.assertEqual(app.transport.negotiatedProtocol, b"h2")  # as V2Ray's tcp+tls
        self.assertEqual(await app.done, b"who am i")


    async def test_half_close_over_tls(self) -> None:
        """Through the HTTP header layer over TLS 1.3 a half-close is a close_notify: what
        was written before it arrives and comes back, a write after it is dropped (as over
        TCP), and the echo server, which takes no half-close, then closes cleanly."""
        server = stream_settings(self.fx.settings("https", inbound=True), inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, server),
                                 Factory.forProtocol(Echo))
        client = stream_settings(self.fx.settings("https", inbound=False), inbound=False)
        endpoint = stack.client_endpoint(reactor, "127.0.0.1", port.getHost().port, client)
        app = await endpoint.connect(Factory.forProtocol(lambda: Collect(b"")))
        app.transport.write(b"last words")
        app.transport.loseWriteConnection()
        app.transport.write(b" dropped")
        self.assertEqual(await app.done, b"last words")

    async def test_sni_picks_certificate(self) -> None:
        a = self.fx.ca.issue("a.test")
        b = self.fx.ca.issue("b.test")
        files = [x.write(self.fx.dir, name) for x, name in ((a, "a"), (b, "b"))]
        server = stream_settings({"security": "tls", "tlsSettings": {"certificates": [
            {"certificateFile": c, "keyFile": k} for c, k in files]}}, inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, server),
                                 Factory.forProtocol(Echo))
        for name in ("a.test", "b.test"):
            client = stream_settings({"security": "tls",
                                      "tlsSettings": self.fx.tls_client(name)}, False)
            endpoint = stack.client_endpoint(reactor, "127.0.0.1", port.getHost().port,
                                              client)
            await self.transfer(endpoint, 1000)


    async def test_wss_ipv6(self) -> None:
        cert = self.fx.ca.issue("::1")
        cert_file, key_file = cert.write(self.fx.dir, "v6")
        server_json = self.fx.settings("wss", inbound=True)
        server_json["tlsSettings"] = {"certificates": [{"certificateFile": cert_file,
                                                        "keyFile": key_file}]}
        server = stream_settings(server_json, inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "::1", 0, server),
                                 Factory.forProtocol(Echo))
        client_json = self.fx.settings("wss", inbound=False)
        client_json["tlsSettings"] = self.fx.tls_client("")  # checks the IP SAN ::1
        client_json["wsSettings"].pop("headers")  # Host: [::1]:port
        client = stream_settings(client_json, inbound=False)
        endpoint = stack.client_endpoint(reactor, "::1", port.getHost().port, client)
        await self.transfer(endpoint, 100000)


class ProxyProtocolTests(TransportTestCase):
    """acceptProxyProtocol: getPeer() through every layer reports the address in the header."""

    async def check(self, kind: str) -> None:
        settings_json = self.fx.settings(kind, inbound=True)
        part = "wsSettings" if kind in ("ws", "wss") else "tcpSettings"
        settings_json.setdefault(part, {})["acceptProxyProtocol"] = True
        server = stream_settings(settings_json, inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, server),
                                 Factory.forProtocol(PeerReporter))
        number = port.getHost().port
        endpoint: Any = LayerClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", number),
                                            lambda f, ready: ProxyHeaderLayer(f, ready))
        client = stream_settings(self.fx.settings(kind, inbound=False), inbound=False)
        if client.security == "tls":
            endpoint = tls.wrap_client_endpoint(reactor, endpoint, "127.0.0.1", client.tls,
                                                default_alpn=["http/1.1"])
        if client.network == "ws":
            endpoint = ws.WebSocketClientEndpoint(endpoint, "127.0.0.1", number, client.ws,
                                                  secure=client.security == "tls")
        elif client.tcp.header_type == "http":
            from vtwist.transport.tcp.disguise import HTTPHeaderClientEndpoint

            endpoint = HTTPHeaderClientEndpoint(endpoint, client.tcp)
        collector = Collect()
        await endpoint.connect(Factory.forProtocol(lambda: collector))
        self.assertEqual(await collector.done, b"198.51.100.7:40000")

    async def test_tcp(self) -> None:
        await self.check("tcp")

    async def test_tls(self) -> None:
        await self.check("tls")

    async def test_ws(self) -> None:
        await self.check("ws")

    async def test_wss(self) -> None:
        await self.check("wss")

    async def test_http_header(self) -> None:
        await self.check("http")


class BadInputTests(TransportTestCase):
    """Misbehaving clients: one log line each, clean close, and others still served."""

    def setUp(self) -> None:
        super().setUp()
        self.logs = log_lines(self, "vtwist.transport")

    async def server(self, kind: str) -> int:
        settings = stream_settings(self.fx.settings(kind, inbound=True), inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, settings),
                                 Factory.forProtocol(Echo))
        return port.getHost().port

    async def raw(self, port: int, data: bytes, wait: float = 5.0) -> bytes:
        """Send ``data`` on a plain socket; return what came back before the server closed."""
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        self.addCleanup(sock.close)
        if data:
            sock.sendall(data)
        received = b""
        for _ in range(int(wait / 0.02)):
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                await task.deferLater(reactor, 0.02, lambda: None)
                continue
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
        self.fail(f"server did not close; got {received[:100]!r}")

    async def still_serving(self, kind: str, port: int) -> None:
        client = stream_settings(self.fx.settings(kind, inbound=False), inbound=False)
        await self.transfer(stack.client_endpoint(reactor, "127.0.0.1", port, client), 65536)

    async def wait_logs(self, n: int) -> None:
        for _ in range(100):
            if len(self.logs) >= n:
                return
            await task.deferLater(reactor, 0.02, lambda: None)

    async def test_tls_garbage(self) -> None:
        port = await self.server("tls")
        answer = await self.raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertNotIn(b"HTTP", answer)
        await self.wait_logs(1)
        self.assertEqual(len(self.logs), 1, self.logs)
        self.assertIn("TLS handshake with 127.0.0.1", self.logs[0])
        await self.still_serving("tls", port)

    async def test_tls_stalled(self) -> None:
        self.patch(tls.TLSLayer, "handshakeTimeout", 0.3)
        port = await self.server("tls")
        await self.raw(port, b"\x16\x03\x01", wait=3)
        self.assertEqual(len(self.logs), 1, self.logs)
        self.assertIn("no handshake within 0.3 s", self.logs[0])
        await self.still_serving("tls", port)

    async def test_ws_stalled(self) -> None:
        self.patch(ws.WSServerLayer, "handshakeTimeout", 0.3)
        port = await self.server("ws")
        await self.raw(port, b"GET /tunnel HTTP/1.1\r\n", wait=3)
        self.assertEqual(len(self.logs), 1, self.logs)
        self.assertIn("no handshake within 0.3 s", self.logs[0])
        await self.still_serving("ws", port)

    async def test_wss_bad_upgrade(self) -> None:
        port = await self.server("wss")
        client = stream_settings(self.fx.settings("tls", inbound=False), inbound=False)
        endpoint = tls.wrap_client_endpoint(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                                         port),
                                            "127.0.0.1", client.tls, ["http/1.1"])
        collector = Collect(b"who am i\r\n\r\n")  # not HTTP
        await endpoint.connect(Factory.forProtocol(lambda: collector))
        answer = await collector.done
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request"), answer)
        await self.wait_logs(1)
        self.assertEqual(len(self.logs), 1, self.logs)
        await self.still_serving("wss", port)

    async def test_ws_wrong_path_404(self) -> None:
        port = await self.server("ws")
        answer = await self.raw(port, b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 404 Not Found\r\n"), answer)
        await self.still_serving("ws", port)

    async def test_ws_oversized_frame(self) -> None:
        port = await self.server("ws")
        from tests.test_transport_layers import masked_frame, upgrade_request

        answer = await self.raw(port, upgrade_request("/tunnel") + masked_frame(9, b"x" * 200))
        self.assertIn(b"\x88\x02\x03\xea", answer)  # close 1002 after the 101
        await self.still_serving("ws", port)

    async def test_http_header_wrong_path(self) -> None:
        port = await self.server("http")
        answer = await self.raw(port, b"GET /nope HTTP/1.1\r\n\r\n")
        self.assertTrue(answer.startswith(b"HTTP/1.1 404 Not Found\r\n"), answer)
        await self.still_serving("http", port)

    async def test_client_untrusted(self) -> None:
        port = await self.server("tls")
        client = stream_settings({"security": "tls", "tlsSettings": {"serverName":
                                                                      "example.test"}}, False)
        endpoint = stack.client_endpoint(reactor, "127.0.0.1", port, client)
        with self.assertRaises(LayerHandshakeError) as caught:
            await endpoint.connect(Factory.forProtocol(Protocol))
        self.assertIn("untrusted certificate chain", str(caught.exception))

    async def test_client_wrong_name(self) -> None:
        port = await self.server("tls")
        client = stream_settings({"security": "tls", "tlsSettings": self.fx.tls_client(
            "other.test")}, False)
        endpoint = stack.client_endpoint(reactor, "127.0.0.1", port, client)
        with self.assertRaises(LayerHandshakeError) as caught:
            await endpoint.connect(Factory.forProtocol(Protocol))
        self.assertIn("does not match the name 'other.test'", str(caught.exception))
        insecure = stream_settings({"security": "tls", "tlsSettings": self.fx.tls_client(
            "other.test", allowInsecure=True)}, False)
        await self.transfer(stack.client_endpoint(reactor, "127.0.0.1", port, insecure), 1000)

    async def test_ip_name_checked(self) -> None:
        port = await self.server("tls")
        client = stream_settings({"security": "tls", "tlsSettings": self.fx.tls_client("")},
                                 False)
        # no serverName: the address 127.0.0.1 is checked against the IP SAN
        await self.transfer(stack.client_endpoint(reactor, "127.0.0.1", port, client), 1000)


class EndpointStringTests(TransportTestCase):
    """``ws:`` and ``wss:`` client endpoint strings (the twisted.plugins dropin)."""

    async def server(self, kind: str) -> int:
        settings = stream_settings(self.fx.settings(kind, inbound=True), inbound=True)
        port = await self.listen(stack.server_endpoint(reactor, "127.0.0.1", 0, settings),
                                 Factory.forProtocol(Echo))
        return port.getHost().port

    async def test_ws(self) -> None:
        from twisted.internet.endpoints import clientFromString

        port = await self.server("ws")
        endpoint = clientFromString(reactor, f"ws:host=127.0.0.1:port={port}:path=/tunnel")
        await self.transfer(endpoint, 100000)

    async def test_wss(self) -> None:
        from twisted.internet.endpoints import clientFromString

        port = await self.server("wss")
        ca = self.fx.ca_file.replace(":", "\\:")
        endpoint = clientFromString(
            reactor, f"wss:127.0.0.1:{port}:path=tunnel:serverName=example.test:caFile={ca}")
        await self.transfer(endpoint, 100000)

    def test_errors(self) -> None:
        from twisted.internet.endpoints import clientFromString

        self.assertRaises(ValueError, clientFromString, reactor, "ws:port=80")
        self.assertRaises(ValueError, clientFromString, reactor, "ws:h:80:bogus=1")
        self.assertRaises(ValueError, clientFromString, reactor, "ws:h:80:allowInsecure=true")
        with self.assertRaises(ValueError) as caught:
            clientFromString(reactor, "wss:h:443:caFile=/nonexistent/ca.pem")
        self.assertIn("/nonexistent/ca.pem", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            clientFromString(reactor, f"wss:h:443:caFile={self.fx.key_file}")  # not a cert
        self.assertIn("caFile", str(caught.exception))
