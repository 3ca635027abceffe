"""ss://, vless:// and trojan:// links; the scheme registry; mixed subscriptions."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.test_cli import CLITestCase, decode_qr, terminal_to_matrix
from tests.test_links import UID, addresses, b64link, fields, lists, texts
from vtwist import runner, tap
from vtwist.config import registry as protocols
from vtwist.genconfig import client_config, client_config_from_link, client_config_from_subscription
from vtwist.share import qr, schemes
from vtwist.share.errors import LinkError, UnsupportedLinkError, UnsupportedTransportError
from vtwist.share.link import VmessLink
from vtwist.share.outbound import find_outbound, link_to_outbound, outbound_to_link
from vtwist.share.shadowsocks import METHODS, ShadowsocksLink
from vtwist.share.stream import Stream
from vtwist.share.subscription import encode_subscription, parse_subscription
from vtwist.share.trojan import TrojanLink
from vtwist.share.vless import VlessLink
from vtwist.transport import registry

parse = schemes.parse_link


def quiet(message: str) -> None:
    """A warn callback that drops the message."""


def b64url(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


class ShadowsocksTests(SynchronousTestCase):
    """SIP002 (base64url and percent-encoded userinfo) and the legacy form."""

    def test_three_forms(self) -> None:
        expected = ShadowsocksLink("example.com", 8388, "aes-256-gcm", "p@ss:wd", "my server")
        legacy = base64.b64encode(b"aes-256-gcm:p@ss:wd@example.com:8388").decode()
        for text in (
            f"ss://{b64url('aes-256-gcm:p@ss:wd')}@example.com:8388#my%20server",
            f"ss://{b64url('aes-256-gcm:p@ss:wd')}@example.com:8388/?x=1#my%20server",
            "ss://" + base64.b64encode(b"aes-256-gcm:p@ss:wd").decode()
            + "@example.com:8388#my%20server",
            "ss://aes-256-gcm:p%40ss%3Awd@example.com:8388#my%20server",
            f"ss://{legacy}#my%20server",
            f"ss://{legacy.rstrip('=')}#my%20server",
            f"SS://{b64url('AES-256-GCM:p@ss:wd')}@example.com:8388#my%20server",
        ):
            self.assertEqual(parse(text), expected, text)

    def test_emits_sip002_base64url(self) -> None:
        link = ShadowsocksLink("::1", 443, "aes-128-gcm", "pw", "a b/c")
        self.assertEqual(link.to_link(), f"ss://{b64url('aes-128-gcm:pw')}@[::1]:443#a%20b%2Fc")
        self.assertEqual(link.to_url(), link.to_link())
        self.assertEqual(parse(link.to_link()), link)

    def test_cipher_aliases(self) -> None:
        for alias, sip, v2ray in (
            ("aead_aes_128_gcm", "aes-128-gcm", "aes-128-gcm"),
            ("aes-256-gcm", "aes-256-gcm", "aes-256-gcm"),
            ("aead_aes_256_gcm", "aes-256-gcm", "aes-256-gcm"),
            ("chacha20-poly1305", "chacha20-ietf-poly1305", "chacha20-poly1305"),
            ("chacha20-ietf-poly1305", "chacha20-ietf-poly1305", "chacha20-poly1305"),
            ("aead_chacha20_poly1305", "chacha20-ietf-poly1305", "chacha20-poly1305"),
            ("plain", "none", "none"),
            ("none", "none", "none"),
        ):
            link = parse(f"ss://{alias}:pw@h:1")
            self.assertEqual(link.method, sip)
            self.assertEqual(link.to_outbound()["settings"]["servers"][0]["method"], v2ray)

    def test_outbound(self) -> None:
        link = parse(f"ss://{b64url('chacha20-ietf-poly1305:secret')}@127.0.0.1:8388#ss")
        outbound = link.to_outbound()
        self.assertEqual(outbound, {
            "protocol": "shadowsocks", "tag": "ss",
            "settings": {"servers": [{"address": "127.0.0.1", "port": 8388,
                                      "method": "chacha20-poly1305", "password": "secret",
                                      "level": 0}]},
        })
        self.assertEqual(outbound_to_link(outbound, self.fail), link)
        self.assertEqual(link.to_outbound("x")["tag"], "x")

    def test_outbound_to_link(self) -> None:
        outbound: dict[str, Any] = {
            "protocol": "Shadowsocks", "tag": "t", "mux": {"enabled": True},
            "settings": {"servers": [
                {"address": "h", "port": "1", "method": "aes-128-gcm", "password": "p",
                 "level": 2, "email": "e@x"},
                {"address": "h2", "port": 2, "method": "none", "password": "p"}]},
            "streamSettings": {"network": "tcp", "security": "none",
                               "tcpSettings": {"header": {"type": "none"}}},
        }
        warnings: list[str] = []
        self.assertEqual(outbound_to_link(outbound, warnings.append),
                         ShadowsocksLink("h", 1, "aes-128-gcm", "p", "t"))
        self.assertEqual(warnings, [
            "settings.servers: a ss link holds one server; using the first of 2",
            "settings.servers[0].level 2 cannot be carried by a ss link; dropped",
            "settings.servers[0].email cannot be carried by a ss link; dropped",
            "mux cannot be carried by a ss link; dropped",
        ])

    def test_errors(self) -> None:
        cases = [
            ("ss://", LinkError, "body",
             "nothing after ss:// (expected base64url(method:password)@host:port#name)"),
            ("ss://!!!#x", LinkError, "body",
             "not base64 of UTF-8 text (expected ss://base64url(method:password)@host:port#name)"),
            (f"ss://{b64url('aes-128-gcm')}@h:1", LinkError, "userinfo",
             "expected method:password in the base64 userinfo"),
            (f"ss://{b64url('x@h:1')}", LinkError, "body",
             "expected base64 of method:password@host:port"),
            ("ss://aes-128-gcm:@h:1", LinkError, "password", "is missing"),
            ("ss://:pw@h:1", LinkError, "method",
             "is missing (the cipher: aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305 "
             "(chacha20-poly1305), none)"),
            ("ss://aes-256-cfb:pw@h:1", UnsupportedLinkError, "method",
             "cipher 'aes-256-cfb' is not supported by V2Ray 4.34 or vtwist (supported: "
             "aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305 (chacha20-poly1305), none)"),
            ("ss://aes-128-gcm:pw@h:1/?plugin=obfs-local%3Bobfs%3Dhttp", UnsupportedLinkError,
             "plugin", "'obfs-local': SIP003 plugins are not supported by V2Ray 4.34 or "
             "vtwist"),
            ("ss://aes-128-gcm:pw@h", LinkError, "port", "is missing (the port)"),
            ("ss://aes-128-gcm:pw@h:99999", LinkError, "port",
             "port out of range 1-65535: 99999"),
            ("ss://aes-128-gcm:pw@:1", LinkError, "address", "is missing (the server address)"),
            ("ss://aes-128-gcm:pw@[::1:1", LinkError, "address",
             "malformed [IPv6] address in '[::1:1'"),
            ("vmess://x", LinkError, "body", None),
        ]
        for text, kind, field, message in cases:
            e = self.assertRaises(LinkError, parse, text)
            self.assertIsInstance(e, kind)
            self.assertEqual(e.field, field, text)
            if message is not None:
                self.assertEqual(str(e), f"invalid ss link: {field}: {message}", text)

    def test_outbound_errors(self) -> None:
        good = ShadowsocksLink("h", 1, "aes-128-gcm", "p").to_outbound()
        for change, message in (
            ({"settings": {"servers": []}},
             "settings.servers: expected a non-empty array of servers"),
            ({"settings": {"servers": [{"address": "h", "port": 1, "method": "rc4-md5",
                                        "password": "p"}]}},
             "settings.servers[0].method: cipher 'rc4-md5' is not supported by V2Ray 4.34 or "
             "vtwist (supported: aes-128-gcm, aes-256-gcm, chacha20-ietf-poly1305 "
             "(chacha20-poly1305), none)"),
            ({"settings": {"servers": [{"address": "h", "port": 1, "method": "none"}]}},
             "settings.servers[0].password: is missing (V2Ray 4.34 requires one)"),
            ({"streamSettings": {"network": "ws"}},
             "streamSettings: an ss link carries no transport: only plain tcp (no TLS, no "
             "header) can be shared"),
            ({"streamSettings": {"network": "tcp", "security": "tls"}},
             "streamSettings: an ss link carries no transport: only plain tcp (no TLS, no "
             "header) can be shared"),
        ):
            e = self.assertRaises(LinkError, outbound_to_link, {**good, **change}, quiet)
            self.assertEqual(str(e), f"cannot make a ss link: {message}")


VLESS_FULL = (
    f"vless://{UID}@example.com:443?type=ws&security=tls&path=%2Fws%3Fed%3D2048"
    "&host=cdn.example.com&sni=sni.example.com&alpn=h2%2Chttp%2F1.1&fp=chrome"
    "&encryption=none&flow=&allowInsecure=1#my%20vless")


class VlessTests(SynchronousTestCase):
    """vless://uuid@host:port?type=&security=&...#name."""

    def test_full_link(self) -> None:
        link = parse(VLESS_FULL)
        self.assertEqual(link, VlessLink("example.com", 443, UID, "my vless", Stream(
            net="ws", host="cdn.example.com", path="/ws?ed=2048", tls="tls",
            sni="sni.example.com", alpn="h2,http/1.1", allow_insecure=True, fp="chrome")))
        self.assertEqual(link.to_outbound(), {
            "protocol": "vless", "tag": "my vless",
            "settings": {"vnext": [{"address": "example.com", "port": 443, "users": [
                {"id": UID, "encryption": "none", "level": 0}]}]},
            "streamSettings": {
                "network": "ws", "security": "tls",
                "wsSettings": {"path": "/ws?ed=2048", "headers": {"Host": "cdn.example.com"}},
                "tlsSettings": {"serverName": "sni.example.com", "alpn": ["h2", "http/1.1"],
                                "allowInsecure": True}},
        })
        self.assertEqual(link.ignored(),
                         ["fp 'chrome': V2Ray 4.34 has no TLS fingerprint setting; ignored"])
        self.assertEqual(parse(link.to_link()), link.canonical())
        self.assertTrue(link.to_link().startswith(
            f"vless://{UID}@example.com:443?type=ws&encryption=none&security=tls&"))

    def test_defaults(self) -> None:
        link = parse(f"vless://{UID.upper()}@[::1]:80")
        self.assertEqual(link, VlessLink("::1", 80, UID))
        self.assertEqual(link.to_outbound()["streamSettings"],
                         {"network": "tcp", "security": "none"})
        self.assertEqual(link.to_link(), f"vless://{UID}@[::1]:80?type=tcp&encryption=none&"
                                         "security=none&headerType=none")

    def test_network_fields(self) -> None:
        kcp = parse(f"vless://{UID}@h:1?type=kcp&headerType=wechat-video&seed=s%20d")
        self.assertEqual(kcp.to_outbound()["streamSettings"], {
            "network": "kcp", "security": "none",
            "kcpSettings": {"header": {"type": "wechat-video"}, "seed": "s d"}})
        http = parse(f"vless://{UID}@h:1?type=tcp&headerType=http&host=a.com,b.com&path=%2Fx"
                     "&security=tls")
        self.assertEqual(http.to_outbound()["streamSettings"], {
            "network": "tcp", "security": "tls",
            "tcpSettings": {"header": {"type": "http", "request": {
                "path": ["/x"], "headers": {"Host": ["a.com", "b.com"]}}}},
            "tlsSettings": {"serverName": "a.com"}})
        for link in (kcp, http):
            self.assertEqual(parse(link.to_link()), link.canonical())

    def test_errors(self) -> None:
        cases = [
            ("vless://@h:1", LinkError, "id", "is missing (the user id, a UUID)"),
            ("vless://h:1", LinkError, "id",
             "is missing (the user id, a UUID: vless://uuid@host:port?type=...#name)"),
            ("vless://nope@h:1", LinkError, "id", "not a valid UUID: 'nope'"),
            (f"vless://{UID}@h:0", LinkError, "port", "port out of range 1-65535: 0"),
            (f"vless://{UID}@h:1?encryption=aes-128-gcm", LinkError, "encryption",
             "VLESS has no encryption of its own; expected none, got 'aes-128-gcm'"),
            (f"vless://{UID}@h:1?flow=xtls-rprx-vision", UnsupportedLinkError, "flow",
             "flow 'xtls-rprx-vision' is not supported by V2Ray 4.34 or vtwist (XTLS flows "
             "are Xray's; expected none)"),
            (f"vless://{UID}@h:1?security=reality", UnsupportedLinkError, "security",
             "'reality' is not supported by vtwist (expected tls or empty)"),
            (f"vless://{UID}@h:1?security=maybe", LinkError, "security",
             "'maybe' is not supported by vtwist (expected tls or empty)"),
            (f"vless://{UID}@h:1?type=pigeon", LinkError, "type",
             "unknown transport 'pigeon' (expected one of tcp, kcp, ws, h2, grpc, quic)"),
            (f"vless://{UID}@h:1?type=kcp&headerType=http", LinkError, "headerType",
             "unknown mKCP header type 'http' (expected one of none, srtp, utp, "
             "wechat-video, dtls, wireguard)"),
            (f"vless://{UID}@h:1?security=tls&allowInsecure=perhaps", LinkError,
             "allowInsecure", 'expected true or false, got "perhaps"'),
        ]
        for text, kind, field, message in cases:
            e = self.assertRaises(LinkError, parse, text)
            self.assertIsInstance(e, kind)
            self.assertEqual(str(e), f"invalid vless link: {field}: {message}", text)

    def test_h2_and_grpc(self) -> None:
        """The URL form: h2 (or http) with host and path; grpc with Xray's serviceName, mode
        and authority."""
        for net in ("h2", "http"):
            link = parse(f"vless://{UID}@h:1?type={net}&security=tls&host=a.example&path=%2Fp")
            self.assertEqual(link.to_outbound()["streamSettings"], {
                "network": "h2", "security": "tls",
                "httpSettings": {"host": ["a.example"], "path": "/p"},
                "tlsSettings": {"serverName": "a.example"}})
            self.assertEqual(parse(link.to_link()), link.canonical())
        link = parse(f"vless://{UID}@h:1?type=grpc&security=tls&serviceName=my.Svc&mode=multi"
                     "&authority=cdn.example&sni=s.example")
        self.assertEqual(link.to_outbound()["streamSettings"], {
            "network": "grpc", "security": "tls",
            "grpcSettings": {"serviceName": "my.Svc", "multiMode": True,
                             "authority": "cdn.example"},
            "tlsSettings": {"serverName": "s.example"}})
        self.assertEqual(parse(link.to_link()), link.canonical())
        self.assertIn("type=grpc&encryption=none&security=tls&serviceName=my.Svc&mode=multi"
                      "&authority=cdn.example", link.to_link())
        gun = parse(f"vless://{UID}@h:1?type=grpc&serviceName=s")
        self.assertEqual(gun.to_outbound()["streamSettings"]["grpcSettings"],
                         {"serviceName": "s"})
        e = self.assertRaises(LinkError, parse, f"vless://{UID}@h:1?type=grpc&mode=triple")
        self.assertIn("unknown grpc mode 'triple'", str(e))

    def test_unsupported_networks(self) -> None:
        self.patch(registry, "UNSUPPORTED", (registry.UnsupportedNetwork("pigeon"),))
        link = parse(f"vless://{UID}@h:1?type=pigeon&security=tls")
        e = self.assertRaises(UnsupportedTransportError, link.to_outbound)
        self.assertEqual(str(e), "invalid vless link: type: transport 'pigeon' is not "
                                 "supported by vtwist yet (supported: "
                                 f"{', '.join(registry.link_names())})")

    def test_outbound_to_link(self) -> None:
        outbound: dict[str, Any] = {
            "protocol": "vless", "tag": "v",
            "settings": {"vnext": [{"address": "h.example", "port": 443, "users": [
                {"id": UID, "encryption": "none", "level": 1}]}]},
            "streamSettings": {"network": "ws", "security": "tls",
                               "wsSettings": {"path": "/p", "maxEarlyData": 2048},
                               "tlsSettings": {"serverName": "s", "disableSystemRoot": False}},
        }
        warnings: list[str] = []
        self.assertEqual(outbound_to_link(outbound, warnings.append), VlessLink(
            "h.example", 443, UID, "v", Stream(net="ws", path="/p", tls="tls", sni="s")))
        self.assertEqual(sorted(warnings), sorted([
            "settings.vnext[0].users[0].level 1 cannot be carried by a vless link; dropped",
            "streamSettings.wsSettings.maxEarlyData cannot be carried by a vless link; dropped",
            "streamSettings.tlsSettings.disableSystemRoot cannot be carried by a vless link; "
            "dropped",
        ]))

    def test_outbound_errors(self) -> None:
        good = parse(f"vless://{UID}@h:1").to_outbound()
        user = good["settings"]["vnext"][0]["users"][0]
        for users, message in (
            ([{**user, "encryption": "auto"}],
             "settings.vnext[0].users[0].encryption: V2Ray 4.34 requires \"none\", got 'auto'"),
            ([{**user, "flow": "xtls-rprx-direct"}],
             "settings.vnext[0].users[0].flow: flow 'xtls-rprx-direct' is not supported by "
             "V2Ray 4.34 or vtwist (XTLS flows are Xray's; expected none)"),
            ([{"encryption": "none"}],
             "settings.vnext[0].users[0].id: is missing (the user id, a UUID)"),
        ):
            outbound = {**good, "settings": {"vnext": [{"address": "h", "port": 1,
                                                        "users": users}]}}
            e = self.assertRaises(LinkError, outbound_to_link, outbound, quiet)
            self.assertEqual(str(e), f"cannot make a vless link: {message}")
        self.patch(registry, "UNSUPPORTED", (registry.UnsupportedNetwork("pigeon"),))
        e = self.assertRaises(LinkError, outbound_to_link,
                              {**good, "streamSettings": {"network": "pigeon"}}, quiet)
        self.assertIsInstance(e, UnsupportedTransportError)
        self.assertEqual(str(e), "cannot make a vless link: streamSettings.network: transport "
                                 "'pigeon' is not supported by vtwist yet (supported: "
                                 f"{', '.join(registry.link_names())})")


class TrojanTests(SynchronousTestCase):
    """trojan://password@host:port?sni=&type=&path=#name (TLS unless security=none)."""

    def test_defaults_to_tls(self) -> None:
        link = parse("trojan://pa%24%24%40word@example.com:443#t")
        self.assertEqual(link, TrojanLink("example.com", 443, "pa$$@word", "t",
                                          Stream(tls="tls")))
        self.assertEqual(link.to_outbound(), {
            "protocol": "trojan", "tag": "t",
            "settings": {"servers": [{"address": "example.com", "port": 443,
                                      "password": "pa$$@word", "level": 0}]},
            "streamSettings": {"network": "tcp", "security": "tls", "tlsSettings": {}},
        })
        self.assertEqual(link.to_link(), "trojan://pa%24%24%40word@example.com:443?type=tcp&"
                                         "security=tls&headerType=none#t")
        self.assertEqual(parse(link.to_link()), link)

    def test_spellings(self) -> None:
        self.assertEqual(parse("trojan://p@h:1?peer=p.example").stream.sni, "p.example")
        self.assertEqual(parse("trojan://p@h:1?sni=s&peer=p").stream.sni, "s")
        self.assertEqual(parse("trojan://p@h:1?type=original").stream.net, "tcp")
        self.assertEqual(parse("trojan://p@h:1?security=none").stream.tls, "")
        self.assertEqual(parse("trojan://p@h:1?security=").stream.tls, "tls")
        self.assertEqual(parse("trojan://p@h:1?allowInsecure=1").stream.allow_insecure, True)

    def test_ws_tls(self) -> None:
        link = parse("trojan://pw@127.0.0.1:8443?type=ws&path=%2Ftj&host=h.example&sni="
                     "s.example&alpn=http%2F1.1#ws")
        self.assertEqual(link.to_outbound()["streamSettings"], {
            "network": "ws", "security": "tls",
            "wsSettings": {"path": "/tj", "headers": {"Host": "h.example"}},
            "tlsSettings": {"serverName": "s.example", "alpn": ["http/1.1"]}})
        self.assertEqual(outbound_to_link(link.to_outbound(), self.fail), link.canonical())

    def test_plain_outbound_gives_security_none(self) -> None:
        outbound = {"protocol": "trojan",
                    "settings": {"servers": [{"address": "h", "port": 1, "password": "p"}]}}
        link = outbound_to_link(outbound, self.fail)
        self.assertEqual(link, TrojanLink("h", 1, "p", "", Stream()))
        self.assertIn("security=none", link.to_link())
        self.assertEqual(parse(link.to_link()), link)

    def test_errors(self) -> None:
        for text, kind, field, message in (
            ("trojan://@h:1", LinkError, "password",
             "is missing (trojan://password@host:port?sni=...#name)"),
            ("trojan://h:1", LinkError, "password",
             "is missing (trojan://password@host:port?sni=...#name)"),
            ("trojan://p@h:x", LinkError, "port", "expected a number 1-65535, got 'x'"),
            ("trojan://p@h:1?security=xtls", UnsupportedLinkError, "security",
             "'xtls' is not supported by vtwist (expected tls or empty)"),
            ("trojan://p@h:1?encryption=ss%3Baes-128-gcm%3Ap", UnsupportedLinkError,
             "encryption", "'ss;aes-128-gcm:p' (a trojan-go extension) is not supported by "
             "V2Ray 4.34 or vtwist"),
            ("trojan://p@h:1?plugin=x", UnsupportedLinkError, "plugin",
             "'x' (a trojan-go extension) is not supported by V2Ray 4.34 or vtwist"),
            ("trojan://p@h:1?type=tcp&headerType=srtp", LinkError, "headerType",
             "unknown tcp header type 'srtp' (expected none or http)"),
        ):
            e = self.assertRaises(LinkError, parse, text)
            self.assertIsInstance(e, kind)
            self.assertEqual(str(e), f"invalid trojan link: {field}: {message}", text)
        outbound = {"protocol": "trojan", "settings": {"servers": [{"address": "h", "port": 1}]}}
        e = self.assertRaises(LinkError, outbound_to_link, outbound, quiet)
        self.assertEqual(str(e), "cannot make a trojan link: settings.servers[0].password: is "
                                 "missing (V2Ray 4.34 requires one)")


class RegistryTests(SynchronousTestCase):
    """One entry per scheme; parsing and encoding dispatch through it."""

    def test_entries(self) -> None:
        self.assertEqual(schemes.names(), ("vmess", "vless", "trojan", "ss"))
        self.assertEqual([s.protocol for s in schemes.SCHEMES],
                         ["vmess", "vless", "trojan", "shadowsocks"])
        self.assertIs(schemes.for_protocol("Shadowsocks"), schemes.lookup("SS"))
        self.assertIsNone(schemes.for_protocol("freedom"))

    def test_dispatch(self) -> None:
        vmess = b64link(fields())
        for text, kind in ((vmess, VmessLink), (f"vless://{UID}@h:1", VlessLink),
                           ("trojan://p@h:1", TrojanLink), ("ss://none:p@h:1", ShadowsocksLink)):
            link = parse(text)
            self.assertIsInstance(link, kind)
            outbound = link_to_outbound(text)
            self.assertEqual(outbound_to_link(outbound, self.fail), link.canonical())

    def test_errors(self) -> None:
        for text, message in (
            ("", "invalid link: link: is empty"),
            ("example.com", "invalid link: scheme: expected a link starting with one of "
                            "vmess://, vless://, trojan://, ss://"),
            ("hysteria2://x@h:1", "invalid link: scheme: unknown scheme hysteria2:// (vtwist "
                                  "reads vmess://, vless://, trojan://, ss://)"),
        ):
            e = self.assertRaises(LinkError, parse, text)
            self.assertEqual(str(e), message)
        e = self.assertRaises(LinkError, outbound_to_link, {"protocol": "socks"}, quiet)
        self.assertEqual(str(e), "cannot make a link: protocol: socks outbounds have no share "
                                 "link (links stand for vmess, vless, trojan, shadowsocks)")

    def test_find_outbound_any_scheme(self) -> None:
        tj = parse("trojan://p@h:1#tj").to_outbound()
        config = {"outbounds": [{"protocol": "freedom", "tag": "direct"}, tj]}
        self.assertIs(find_outbound(config), tj)

    def test_client_config(self) -> None:
        config = client_config_from_link("ss://aes-128-gcm:pw@127.0.0.1:8388", "127.0.0.1:2")
        self.assertEqual(config["outbounds"][0], {
            "protocol": "shadowsocks", "tag": "proxy",
            "settings": {"servers": [{"address": "127.0.0.1", "port": 8388,
                                      "method": "aes-128-gcm", "password": "pw", "level": 0}]},
        })
        self.assertEqual(config["inbounds"][0]["port"], 2)


class MixedSubscriptionTests(SynchronousTestCase):
    """All four schemes kept; one warning per skipped line, saying why."""

    LINES = [
        b64link(fields(ps="vm")),
        f"vless://{UID}@127.0.0.1:2?type=ws&security=tls#vl",
        "trojan://pw@127.0.0.1:3#tj",
        f"ss://{b64url('aes-128-gcm:pw')}@127.0.0.1:4#ss",
        "hysteria2://pw@h:5#hy",
        f"vless://{UID}@h:6?type=grpc&security=tls&serviceName=s&mode=multi#grpc",
        "ss://rc4-md5:pw@h:7#rc4",
        f"vless://{UID}@h:8?flow=xtls-rprx-vision#xtls",
        "trojan://@h:9#nopw",
        "ss://aes-128-gcm:pw@h:10/?plugin=v2ray-plugin#plugin",
        "not a link at all",
    ]

    def test_kept_and_skipped(self) -> None:
        warnings: list[str] = []
        links = parse_subscription(encode_subscription(self.LINES), warnings.append)
        self.assertEqual([link.name for link in links], ["vm", "vl", "tj", "ss", "grpc"])
        self.assertEqual(warnings, [
            "subscription line 5: skipped (unknown scheme hysteria2://; vtwist reads "
            "vmess://, vless://, trojan://, ss://)",
            "subscription line 7: skipped (unsupported): invalid ss link: method: cipher "
            "'rc4-md5' is not supported by V2Ray 4.34 or vtwist (supported: aes-128-gcm, "
            "aes-256-gcm, chacha20-ietf-poly1305 (chacha20-poly1305), none)",
            "subscription line 8: skipped (unsupported): invalid vless link: flow: flow "
            "'xtls-rprx-vision' is not supported by V2Ray 4.34 or vtwist (XTLS flows are "
            "Xray's; expected none)",
            "subscription line 9: skipped (malformed): invalid trojan link: password: is "
            "missing (trojan://password@host:port?sni=...#name)",
            "subscription line 10: skipped (unsupported): invalid ss link: plugin: "
            "'v2ray-plugin': SIP003 plugins are not supported by V2Ray 4.34 or vtwist",
            "subscription line 11: skipped (not a link)",
        ])

    def test_pick_each_scheme(self) -> None:
        body = encode_subscription(self.LINES)
        for name, protocol in (("vm", "vmess"), ("vl", "vless"), ("TJ", "trojan"),
                               ("ss", "shadowsocks")):
            config = client_config_from_subscription(body, name, "127.0.0.1:1", quiet)
            self.assertEqual(config["outbounds"][0]["protocol"], protocol)

    def test_protocol_vtwist_lacks_is_skipped(self) -> None:
        """A scheme whose outbound the config registry lacks is skipped, not handed on."""
        self.patch(protocols, "OUTBOUND_MODULES",
                   {k: v for k, v in protocols.OUTBOUND_MODULES.items() if k != "trojan"})
        warnings: list[str] = []
        links = parse_subscription(encode_subscription(self.LINES[:4]), warnings.append)
        self.assertEqual([link.name for link in links], ["vm", "vl", "ss"])
        self.assertEqual(warnings, ["subscription line 3: skipped (unsupported protocol): "
                                    "vtwist has no trojan outbound yet"])

    def test_every_protocol_registered(self) -> None:
        """Every scheme's protocol has an outbound in vtwist's config registry."""
        for scheme in schemes.SCHEMES:
            self.assertIn(scheme.protocol, protocols.OUTBOUND_MODULES)


# -- property tests ----------------------------------------------------------------------
passwords = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24)


@st.composite
def streams(draw: st.DrawFn) -> Stream:
    net = draw(st.sampled_from(registry.link_names()))
    fields_ = registry.lookup(net).link_fields
    header = st.sampled_from(fields_.header_types or ("none",))
    securities = getattr(fields_, "securities", None)  # quic: host is the security
    host_values = st.sampled_from(securities) if securities else \
        lists if net in ("tcp", "h2") else texts
    return Stream(
        net=net, type=draw(header),
        host=draw(host_values),
        path=draw(lists if net == "tcp" else texts),
        tls=draw(st.sampled_from(["", "tls"])), sni=draw(texts), alpn=draw(lists),
        allow_insecure=draw(st.booleans()), fp=draw(st.sampled_from(["", "chrome"])))


vless_links = st.builds(VlessLink, addresses, st.integers(1, 65535), st.uuids().map(str),
                        texts, streams())
trojan_links = st.builds(TrojanLink, addresses, st.integers(1, 65535), passwords, texts,
                         streams())
ss_links = st.builds(ShadowsocksLink, addresses, st.integers(1, 65535),
                     st.sampled_from(sorted(METHODS)), passwords, texts)
any_links = st.one_of(vless_links, trojan_links, ss_links)


class PropertyTests(SynchronousTestCase):
    """Round trips: text, outbound, subscription; garbage is a one-line LinkError."""

    @settings(max_examples=200, deadline=None)
    @given(any_links)
    def test_text_round_trip(self, link: Any) -> None:
        canonical = link.canonical()
        self.assertEqual(parse(link.to_link()), canonical)
        self.assertEqual(parse(canonical.to_link()), canonical)
        self.assertEqual(canonical.canonical(), canonical)

    @settings(max_examples=200, deadline=None)
    @given(any_links)
    def test_outbound_round_trip(self, link: Any) -> None:
        outbound = link.to_outbound()
        json.dumps(outbound)
        warnings: list[str] = []
        self.assertEqual(outbound_to_link(outbound, warnings.append), link.canonical())
        self.assertEqual(warnings, [])
        self.assertEqual(link.canonical().to_outbound(), outbound)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(any_links, min_size=1, max_size=6))
    def test_subscription_round_trip(self, items: list[Any]) -> None:
        body = encode_subscription([i.to_link() for i in items])
        self.assertEqual(parse_subscription(body, self.fail), [i.canonical() for i in items])

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(["ss://", "vless://", "trojan://", f"vless://{UID}@h:1?",
                            "trojan://p@h:1?", "ss://aes-128-gcm:p@"]), st.text(max_size=60))
    def test_garbage_gives_link_error(self, prefix: str, text: str) -> None:
        try:
            link = parse(prefix + text)
            link.to_outbound()
            link.to_link()
        except LinkError as e:
            self.assertNotIn("\n", str(e))


# -- the command line and the twistd plugin ---------------------------------------------
LOCAL = {
    "vless": f"vless://{UID}@127.0.0.1:443?type=ws&security=tls&path=%2Fv&fp=chrome#vl",
    "trojan": "trojan://secret@127.0.0.1:443?sni=localhost#tj",
    "shadowsocks": f"ss://{b64url('aes-256-gcm:pw')}@127.0.0.1:8388#ss",
}


class CommandLineTests(CLITestCase):
    """``vtwist link decode/encode/qr``, ``config from-link``, ``run --link/--subscription``
    and the twistd plugin's options, for each new scheme."""

    def test_decode(self) -> None:
        for protocol, text in LOCAL.items():
            status, out, err = self.run_cli("link", "decode", "--outbound", text)
            self.assertEqual(status, 0)
            self.assertEqual(json.loads(out), link_to_outbound(text))
            self.assertEqual(json.loads(out)["protocol"], protocol)
            if protocol == "vless":
                self.assertEqual(err, "warning: fp 'chrome': V2Ray 4.34 has no TLS fingerprint "
                                      "setting; ignored\n")
            status, out, _ = self.run_cli("link", "decode", "--fields", text)
            self.assertEqual(json.loads(out)["address"], "127.0.0.1")

    def test_decode_errors(self) -> None:
        self.assertEqual(self.run_cli("link", "decode", "vless://nope@h:1"),
                         (2, "", "vtwist: invalid vless link: id: not a valid UUID: 'nope'\n"))
        self.assertEqual(self.run_cli("link", "decode", "wireguard://x"),
                         (2, "", "vtwist: invalid link: scheme: unknown scheme wireguard:// "
                                 "(vtwist reads vmess://, vless://, trojan://, ss://)\n"))

    def test_encode(self) -> None:
        for text in LOCAL.values():
            link = parse(text)
            config = client_config(link.to_outbound())
            config["outbounds"].insert(0, {"protocol": "freedom", "tag": "first"})
            path = self.write(json.dumps(config))
            for extra in ((), ("--url",), ("--outbound", link.name)):
                status, out, err = self.run_cli("link", "encode", "--config", path, *extra)
                self.assertEqual((status, err), (0, ""))
                self.assertEqual(out, link.canonical().to_link() + "\n")

    def test_qr(self) -> None:
        for text in LOCAL.values():
            status, out, _ = self.run_cli("link", "qr", text)
            self.assertEqual(status, 0)
            matrix = terminal_to_matrix(out)
            expected = qr.qr_matrix(text)
            self.assertEqual(matrix[:len(expected)], expected)
            self.assertEqual(decode_qr(matrix), text)
        status, out, err = self.run_cli("link", "qr", "ss://rc4-md5:x@h:1")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("vtwist: invalid ss link: method: cipher 'rc4-md5' is not supported", err)

    def test_config_from_link(self) -> None:
        for text in LOCAL.values():
            status, out, _ = self.run_cli("config", "from-link", text, "--socks", "127.0.0.1:3")
            self.assertEqual(status, 0)
            self.assertEqual(json.loads(out), client_config_from_link(text, "127.0.0.1:3"))

    def test_run_link_and_subscription(self) -> None:
        ran: list[dict[str, Any]] = []
        self.patch(runner, "run_config", lambda config, *rest: ran.append(config) or 0)
        for text in LOCAL.values():
            self.assertEqual(self.run_cli("run", "--link", text), (0, "", ""))
            self.assertEqual(ran[-1], client_config_from_link(text))
        path = self.write(encode_subscription(["hy2://x@h:1", *LOCAL.values()]))
        status, _, err = self.run_cli("run", "--subscription", path, "--pick", "tj")
        self.assertEqual(status, 0)
        self.assertEqual(err, "warning: subscription line 1: skipped (unknown scheme hy2://; "
                              "vtwist reads vmess://, vless://, trojan://, ss://)\n")
        self.assertEqual(ran[-1]["outbounds"][0]["protocol"], "trojan")

    def test_twistd_options(self) -> None:
        for protocol, text in LOCAL.items():
            options = tap.Options()
            options.parseOptions(["--link", text, "--socks", "127.0.0.1:4"])
            config = tap.config_from_options(options)
            self.assertEqual(config["outbounds"][0]["protocol"], protocol)
            self.assertEqual(config["inbounds"][0]["port"], 4)
        path = self.write(encode_subscription(list(LOCAL.values())))
        options = tap.Options()
        options.parseOptions(["--subscription", path, "--pick", "ss"])
        self.assertEqual(tap.config_from_options(options)["outbounds"][0]["protocol"],
                         "shadowsocks")
