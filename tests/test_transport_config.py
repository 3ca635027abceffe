"""streamSettings parsing for tls, ws and the tcp HTTP header: defaults, errors, warnings."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import pem_lines, shared_ca, shared_server_cert
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.transport import settings as stream_settings
from vtwist.transport import stack


def parse(obj: Any, inbound: bool = True) -> tuple[stream_settings.StreamSettings, list[str]]:
    warnings: list[str] = []
    return stream_settings.parse_stream_settings(Node(obj, "streamSettings", warnings.append),
                                        inbound), warnings


class TLSConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.cert = shared_server_cert("example.test", "127.0.0.1")
        self.cert_file, self.key_file = self.cert.write(self.dir, "s")
        self.ca_file, _ = shared_ca().write(self.dir, "ca")

    def tls(self, certs: list[dict[str, Any]], inbound: bool = True, **extra: Any) -> Any:
        return parse({"security": "tls", "tlsSettings": {"certificates": certs, **extra}},
                     inbound)

    def assertError(self, fragment: str, path: str, *args: Any, **kwargs: Any) -> None:
        with self.assertRaises(ConfigError) as caught:
            self.tls(*args, **kwargs)
        self.assertIn(fragment, str(caught.exception))
        self.assertIn(path, str(caught.exception))

    def test_files(self) -> None:
        settings, warnings = self.tls([{"certificateFile": self.cert_file,
                                        "keyFile": self.key_file}], alpn="h2,http/1.1")
        self.assertEqual(warnings, [])
        self.assertEqual(settings.tls.server_certificates[0].chain[0], self.cert.cert)
        self.assertEqual(settings.tls.alpn, ["h2", "http/1.1"])

    def test_inline(self) -> None:
        settings, _ = self.tls([{"certificate": pem_lines(self.cert.cert_pem),
                                 "key": pem_lines(self.cert.key_pem),
                                 "usage": "encipherment"}])
        self.assertEqual(settings.tls.server_certificates[0].chain[0], self.cert.cert)

    def test_missing_file(self) -> None:
        self.assertError("cannot read certificate file", "certificates[0].certificateFile",
                         [{"certificateFile": "/nonexistent.crt", "keyFile": self.key_file}])

    def test_unreadable_key(self) -> None:
        self.assertError("cannot read key file", "certificates[0].keyFile",
                         [{"certificateFile": self.cert_file, "keyFile": self.dir}])

    def test_bad_pem(self) -> None:
        self.assertError("not a PEM certificate", "certificates[0].certificate",
                         [{"certificate": ["garbage"], "key": ["x"]}])

    def test_bad_pem_file(self) -> None:
        self.assertError("not a PEM certificate", "certificates[0].certificateFile",
                         [{"certificateFile": self.key_file, "keyFile": self.key_file}])
        self.assertError("not an unencrypted PEM private key", "certificates[0].keyFile",
                         [{"certificateFile": self.cert_file, "keyFile": self.cert_file}])

    def test_bad_key_pem(self) -> None:
        self.assertError("not an unencrypted PEM private key", "certificates[0].key",
                         [{"certificateFile": self.cert_file, "key": ["garbage"]}])

    def test_key_mismatch(self) -> None:
        other = shared_ca()
        self.assertError("does not belong", "certificates[0].key",
                         [{"certificateFile": self.cert_file,
                           "key": pem_lines(other.key_pem)}])

    def test_server_needs_key(self) -> None:
        self.assertError("needs keyFile or key", "certificates[0]",
                         [{"certificateFile": self.cert_file}])

    def test_server_needs_certificate(self) -> None:
        self.assertError("at least one certificate", "tlsSettings.certificates", [])
        self.assertError("at least one certificate", "tlsSettings.certificates",
                         [{"certificateFile": self.ca_file, "usage": "verify"}])

    def test_issue_unsupported(self) -> None:
        self.assertError("not supported", "certificates[0].usage",
                         [{"certificateFile": self.cert_file, "keyFile": self.key_file,
                           "usage": "issue"}])

    def test_client(self) -> None:
        settings, warnings = self.tls([{"certificateFile": self.ca_file, "usage": "verify"}],
                                      inbound=False, serverName="example.test",
                                      allowInsecure=False, disableSystemRoot=True)
        self.assertEqual(warnings, [])
        self.assertEqual(settings.tls.server_name, "example.test")
        self.assertTrue(settings.tls.disable_system_root)
        self.assertEqual(settings.tls.certificates[0].usage, "verify")

    def test_client_without_settings(self) -> None:
        settings, _ = parse({"security": "tls"}, inbound=False)
        self.assertEqual(settings.tls.server_name, "")
        self.assertFalse(settings.tls.allow_insecure)

    def test_client_trusts_nothing_warns(self) -> None:
        _, warnings = self.tls([], inbound=False, disableSystemRoot=True)
        self.assertEqual(len(warnings), 1)

    def test_pinning_warns(self) -> None:
        _, warnings = self.tls([], inbound=False, pinnedPeerCertificateChainSha256=["x"])
        self.assertIn("not supported", warnings[0])

    def test_unknown_field_warns(self) -> None:
        _, warnings = self.tls([], inbound=False, serverNme="x")
        self.assertIn("serverNme", warnings[0])

    def tearDown(self) -> None:
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


class WSConfigTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        settings, _ = parse({"network": "ws"})
        self.assertEqual(settings.ws.path, "/")
        self.assertIsNone(settings.ws.host)

    def test_path_and_headers(self) -> None:
        settings, warnings = parse({"network": "websocket", "wsSettings": {
            "path": "tunnel", "headers": {"Host": "cdn.example", "X-A": "b"}}}, False)
        self.assertEqual(warnings, [])
        self.assertEqual(settings.ws.path, "/tunnel")
        self.assertEqual(settings.ws.host, "cdn.example")
        self.assertEqual(settings.ws.headers, [("X-A", "b")])

    def test_path_misspelling(self) -> None:
        settings, warnings = parse({"network": "ws", "wsSettings": {"Path": "/old"}})
        self.assertEqual(settings.ws.path, "/old")
        self.assertEqual(warnings, [])

    def test_proxy_protocol(self) -> None:
        settings, _ = parse({"network": "ws", "wsSettings": {"acceptProxyProtocol": True}})
        self.assertTrue(settings.accept_proxy_protocol)

    def test_early_data_v2fly(self) -> None:
        settings, warnings = parse({"network": "ws", "wsSettings": {
            "maxEarlyData": 2048, "earlyDataHeaderName": "Sec-WebSocket-Protocol"}})
        ws = settings.network_settings["ws"]
        self.assertEqual((ws.max_early_data, ws.early_data_header),
                         (2048, "Sec-WebSocket-Protocol"))
        self.assertEqual(warnings, [])

    def test_early_data_in_path_query(self) -> None:
        """Xray's (and the share links') ``?ed=2048``: the size leaves the path."""
        settings, warnings = parse({"network": "ws", "wsSettings": {"path": "/ray?ed=2048"}})
        ws = settings.network_settings["ws"]
        self.assertEqual((ws.path, ws.max_early_data, ws.early_data_header),
                         ("/ray", 2048, "Sec-WebSocket-Protocol"))
        settings, _ = parse({"network": "ws", "wsSettings": {"path": "/ray?a=1&ed=16"}})
        self.assertEqual(settings.network_settings["ws"].path, "/ray?a=1")
        self.assertEqual(warnings, [])

    def test_early_data_too_large_clamped(self) -> None:
        settings, warnings = parse({"network": "ws", "wsSettings": {"path": "/r?ed=65536"}})
        self.assertEqual(settings.network_settings["ws"].max_early_data, 4096)
        self.assertEqual(len(warnings), 1)
        self.assertIn("ed=65536", warnings[0])

    def test_early_data_bad(self) -> None:
        for ws in ({"path": "/r?ed=x"}, {"maxEarlyData": -1}, {"maxEarlyData": 1 << 20},
                   {"maxEarlyData": 8, "earlyDataHeaderName": "Host"}):
            with self.assertRaises(ConfigError, msg=ws):
                parse({"network": "ws", "wsSettings": ws})

    def test_bad_header_value(self) -> None:
        with self.assertRaises(ConfigError):
            parse({"network": "ws", "wsSettings": {"headers": {"Host": 3}}})


class TCPHeaderConfigTests(SynchronousTestCase):
    def test_none(self) -> None:
        settings, _ = parse({"tcpSettings": {"header": {"type": "none"}}})
        self.assertEqual(settings.tcp.header_type, "none")

    def test_http_defaults(self) -> None:
        settings, warnings = parse({"tcpSettings": {"header": {"type": "http"}}})
        self.assertEqual(warnings, [])
        request = settings.tcp.request
        self.assertEqual((request.method, request.version, request.paths), ("GET", "1.1", ["/"]))
        self.assertEqual(request.headers[0], ("Host", ["www.baidu.com", "www.bing.com"]))
        self.assertEqual(settings.tcp.response.status, "200")
        self.assertEqual(settings.tcp.response.reason, "OK")

    def test_http_custom(self) -> None:
        settings, _ = parse({"tcpSettings": {"header": {
            "type": "http",
            "request": {"version": "1.0", "method": "POST", "path": "/a,/b",
                        "headers": {"Host": ["x.example"], "Accept": "a, b"}},
            "response": {"status": "404", "headers": {"Server": "nginx"}},
        }}})
        request = settings.tcp.request
        self.assertEqual(request.paths, ["/a", "/b"])
        # V2Ray sorts header names and splits a plain string at commas
        self.assertEqual(request.headers, [("Accept", ["a", " b"]), ("Host", ["x.example"])])
        self.assertEqual((settings.tcp.response.status, settings.tcp.response.reason),
                         ("404", "OK"))
        self.assertEqual(settings.tcp.response.headers, [("Server", ["nginx"])])

    def test_unknown_type(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse({"tcpSettings": {"header": {"type": "srtp"}}})
        self.assertIn("tcpSettings.header.type", str(caught.exception))

    def test_null_header_value(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse({"tcpSettings": {"header": {"type": "http",
                                              "request": {"headers": {"Host": None}}}}})
        self.assertIn("empty HTTP header value", str(caught.exception))


class ServerALPNTests(SynchronousTestCase):
    """The ALPN a TLS server offers by default depends on the network, as in V2Ray 4.34."""

    def test_defaults(self) -> None:
        from vtwist.transport.tls import layer as tls

        cert = shared_server_cert("example.test", "127.0.0.1")
        offered: dict[str, list[str]] = {}

        def capture(endpoint: Any, settings: Any, default_alpn: Any = None) -> Any:
            offered[network] = default_alpn
            return endpoint

        self.patch(tls, "wrap_server_endpoint", capture)
        tls_settings = {"certificates": [{"certificate": pem_lines(cert.cert_pem),
                                          "key": pem_lines(cert.key_pem)}]}
        for network in ("tcp", "kcp", "ws"):
            settings, _ = parse({"network": network, "security": "tls",
                                 "tlsSettings": tls_settings})
            stack.server_endpoint(None, "127.0.0.1", 0, settings)
        self.assertEqual(offered, {"tcp": ["h2"], "kcp": ["h2", "http/1.1"],
                                   "ws": ["http/1.1"]})
