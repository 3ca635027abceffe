"""HandlerService's StreamConfig conversion against V2Ray 4.34's own JSON -> protobuf
builder: ``v2ctl config`` turns a config file's inbound and outbound (every transport, TLS
with inline certificates, sockopt) into ``core.Config``; the protobuf StreamConfig it holds,
through :func:`vtwist.app.api.stream_config.stream_json`, must parse to exactly the
settings vtwist reads from the same JSON ``streamSettings``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import pem_lines, shared_ca, shared_server_cert
from vtwist.app.api.handler_config import unpack
from vtwist.app.api.stream_config import stream_json
from vtwist.app.api.v2raypb import app_proxyman_config_pb2, config_pb2
from vtwist.config.node import Node
from vtwist.transport.settings import parse_stream_settings

V2CTL = shutil.which("v2ctl")
USER = "b831381d-6324-4d53-ad4f-8cda48b30811"


def streams() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """name -> (inbound streamSettings, outbound streamSettings), V2Ray 4.34 JSON."""
    cert = shared_server_cert("localhost", "127.0.0.1")
    server_tls = {"enableSessionResumption": False, "alpn": ["h2", "http/1.1"],
                  "certificates": [{"certificate": pem_lines(cert.cert_pem),
                                    "key": pem_lines(cert.key_pem)}]}
    client_tls = {"enableSessionResumption": False, "serverName": "localhost",
                  "certificates": [{"certificate": pem_lines(shared_ca().cert_pem),
                                    "usage": "verify"}]}
    http_header = {"type": "http",
                   "request": {"version": "1.1", "method": "GET", "path": ["/a", "/b"],
                               "headers": {"Host": ["x.test", "y.test"],
                                           "User-Agent": ["ua"]}},
                   "response": {"version": "1.1", "status": "404", "reason": "Not Found",
                                "headers": {"Content-Type": ["text/plain"]}}}
    kcp = {"mtu": 1200, "tti": 20, "uplinkCapacity": 50, "downlinkCapacity": 100,
           "congestion": True, "readBufferSize": 4, "writeBufferSize": 1,
           "header": {"type": "wechat-video"}, "seed": "s3cret"}
    return {
        "tcp-http": ({"network": "tcp", "tcpSettings": {"header": http_header}},
                     {"network": "tcp", "tcpSettings": {"header": http_header}}),
        "tcp-tls-sockopt": ({"network": "tcp", "security": "tls", "tlsSettings": server_tls,
                             "sockopt": {"mark": 7, "tcpFastOpen": True}},
                            {"network": "tcp", "security": "tls", "tlsSettings": client_tls}),
        "kcp": ({"network": "kcp", "kcpSettings": kcp}, {"network": "mkcp", "kcpSettings": kcp}),
        "ws-tls": ({"network": "ws", "security": "tls", "tlsSettings": server_tls,
                    "wsSettings": {"path": "/ray", "headers": {"Host": "cdn.test"}}},
                   {"network": "websocket", "security": "tls", "tlsSettings": client_tls,
                    "wsSettings": {"path": "/ray", "headers": {"Host": "cdn.test"}}}),
        "h2": ({"network": "h2", "security": "tls", "tlsSettings": server_tls,
                "httpSettings": {"host": ["a.test", "b.test"], "path": "/h2"}},
               {"network": "http", "security": "tls", "tlsSettings": client_tls,
                "httpSettings": {"host": ["a.test"], "path": "/h2"}}),
        "quic": ({"network": "quic", "quicSettings": {"security": "chacha20-poly1305",
                                                      "key": "k",
                                                      "header": {"type": "dtls"}}},
                 {"network": "quic", "quicSettings": {"security": "aes-128-gcm", "key": "k",
                                                      "header": {"type": "srtp"}}}),
        "ds": ({"network": "ds", "dsSettings": {"path": "/tmp/vtwist-x.sock",
                                                "abstract": True, "padding": True}},
               {"network": "domainsocket", "dsSettings": {"path": "/tmp/vtwist-x.sock"}}),
    }


def comparable(settings: Any) -> Any:
    """``settings`` with its TLS certificates as (usage, DER chain, key DER): certificate
    and key objects compare by identity."""
    tls = settings.tls
    if tls is None:
        return settings

    def key_der(key: Any) -> bytes | None:
        if key is None:
            return None
        return key.private_bytes(serialization.Encoding.DER,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    certificates = [(c.usage, [x.public_bytes(serialization.Encoding.DER) for x in c.chain],
                     key_der(c.key)) for c in tls.certificates]
    return dataclasses.replace(settings, tls=dataclasses.replace(tls,
                                                                 certificates=certificates))


class V2ctlStreamConfigTests(SynchronousTestCase):
    def setUp(self) -> None:
        if V2CTL is None:
            self.skipTest("v2ctl is not installed (apt-get install -y v2ray)")

    def built(self, inbound_stream: dict[str, Any], outbound_stream: dict[str, Any]) -> Any:
        """``v2ctl config`` of a config with these streams: the core.Config protobuf."""
        data = {"inbounds": [{"tag": "in", "port": 1234, "protocol": "vmess",
                              "settings": {"clients": [{"id": USER}]},
                              "streamSettings": inbound_stream}],
                "outbounds": [{"tag": "out", "protocol": "vmess",
                               "settings": {"vnext": [{"address": "127.0.0.1", "port": 1,
                                                       "users": [{"id": USER}]}]},
                               "streamSettings": outbound_stream}]}
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(data, f)
        self.addCleanup(os.unlink, f.name)
        done = subprocess.run([V2CTL, "config", f.name], capture_output=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        return config_pb2.Config.FromString(done.stdout)

    def assertSame(self, stream: Any, data: dict[str, Any], inbound: bool, what: str) -> None:
        converted = stream_json(stream, what)
        warnings: list[str] = []
        got = parse_stream_settings(Node(converted, what, warnings.append), inbound)
        want = parse_stream_settings(Node(data, what, lambda _: None), inbound)
        self.assertEqual(warnings, [], converted)
        self.assertEqual(comparable(got), comparable(want), converted)

    def test_every_transport(self) -> None:
        for name, (inbound_stream, outbound_stream) in streams().items():
            core = self.built(inbound_stream, outbound_stream)
            receiver = unpack(core.inbound[0].receiver_settings,
                              app_proxyman_config_pb2.ReceiverConfig, "receiver_settings")
            self.assertSame(receiver.stream_settings, inbound_stream, True, f"{name} inbound")
            sender = unpack(core.outbound[0].sender_settings,
                            app_proxyman_config_pb2.SenderConfig, "sender_settings")
            self.assertSame(sender.stream_settings, outbound_stream, False,
                            f"{name} outbound")


#: name -> (inbound, outbound) without streamSettings: every protocol HandlerService takes
PROTOCOLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "vless": ({"protocol": "vless", "settings": {
        "clients": [{"id": USER, "email": "a@x", "level": 1}], "decryption": "none",
        "fallbacks": [{"dest": 80}, {"path": "/p", "dest": "127.0.0.1:81", "xver": 1}]}},
        {"protocol": "vless", "settings": {"vnext": [{"address": "127.0.0.1", "port": 1, "users": [
            {"id": USER, "encryption": "none", "level": 1}]}]}}),
    "trojan": ({"protocol": "trojan", "settings": {
        "clients": [{"password": "pw", "email": "t@x"}], "fallbacks": [{"dest": 80}]}},
        {"protocol": "trojan", "settings": {"servers": [
            {"address": "127.0.0.1", "port": 1, "password": "pw", "email": "t@x"}]}}),
    "shadowsocks": ({"protocol": "shadowsocks", "settings": {
        "method": "aes-256-gcm", "password": "pw", "network": "tcp,udp"}},
        {"protocol": "shadowsocks", "settings": {"servers": [
            {"address": "127.0.0.1", "port": 1, "method": "chacha20-poly1305",
             "password": "pw"}]}}),
    "socks": ({"protocol": "socks", "settings": {
        "auth": "password", "accounts": [{"user": "u", "pass": "p"}], "udp": True,
        "ip": "127.0.0.1"}},
        {"protocol": "socks", "settings": {"servers": [
            {"address": "127.0.0.1", "port": 1, "users": [{"user": "u", "pass": "p"}]}]}}),
    "http-freedom": ({"protocol": "http", "settings": {
        "accounts": [{"user": "u", "pass": "p"}], "allowTransparent": False}},
        {"protocol": "freedom", "settings": {"domainStrategy": "UseIPv4",
                                             "redirect": "127.0.0.1:5"}}),
    "dokodemo-blackhole": ({"protocol": "dokodemo-door", "settings": {
        "address": "1.2.3.4", "port": 5, "network": "tcp,udp"}},
        {"protocol": "blackhole", "settings": {"response": {"type": "http"}}}),
    "vmess": ({"protocol": "vmess", "settings": {
        "clients": [{"id": USER, "alterId": 4, "email": "v@x"}],
        "default": {"alterId": 4, "level": 0}, "disableInsecureEncryption": True}},
        {"protocol": "vmess", "settings": {"vnext": [{"address": "example.com", "port": 1, "users": [
            {"id": USER, "alterId": 0, "security": "chacha20-poly1305"}]}]}}),
}


class V2ctlHandlerConfigTests(SynchronousTestCase):
    """Whole handler configs (AddInbound/AddOutbound) as v2ctl builds them: the same
    inbound and outbound vtwist reads from the JSON."""

    def setUp(self) -> None:
        if V2CTL is None:
            self.skipTest("v2ctl is not installed (apt-get install -y v2ray)")

    def test_every_protocol(self) -> None:
        from vtwist.app.api.handler_config import inbound_json, outbound_json
        from vtwist.config.loader import parse_inbound, parse_outbound

        for name, (inbound, outbound) in PROTOCOLS.items():
            data_in = {"tag": "in", "port": 1234, "listen": "127.0.0.1", **inbound}
            data_out = {"tag": "out", **outbound}
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump({"inbounds": [data_in], "outbounds": [data_out]}, f)
            self.addCleanup(os.unlink, f.name)
            done = subprocess.run([V2CTL, "config", f.name], capture_output=True, timeout=60)
            self.assertEqual(done.returncode, 0, done.stderr)
            core = config_pb2.Config.FromString(done.stdout)
            warnings: list[str] = []
            got_in = parse_inbound(Node(inbound_json(core.inbound[0]), "inbound",
                                        warnings.append))
            got_out = parse_outbound(Node(outbound_json(core.outbound[0]), "outbound",
                                          warnings.append))
            self.assertEqual(warnings, [], name)
            self.assertEqual(got_in, parse_inbound(Node(data_in, "i", lambda _: None)), name)
            self.assertEqual(got_out, parse_outbound(Node(data_out, "o", lambda _: None)),
                             name)
