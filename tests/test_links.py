"""vmess:// links <-> outbound configs, subscriptions, client configs."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from vtwist.genconfig import client_config_from_link, client_config_from_subscription, parse_socks
from vtwist.share.errors import LinkError, UnsupportedTransportError
from vtwist.share.fields import SECURITIES
from vtwist.share.link import VmessLink, parse_link
from vtwist.share.outbound import find_outbound, link_to_outbound, outbound_to_link
from vtwist.share.subscription import (
    encode_subscription,
    parse_subscription,
    subscription_outbounds,
)
from vtwist.transport import linkfields, registry

# The link from the original design notes (a public server; never contacted by any test).
DESIGN_LINK = (
    "vmess://eyJ2IjogIjIiLCAicHMiOiAiaXBfMjA3LjI0Ni4xMDguMzYiLCAiYWRkIjogIjIwNy4yNDYuMTA4"
    "LjM2IiwgInBvcnQiOiAiODA4MCIsICJpZCI6ICJhZGRmMjEzYS1lMDFmLTRmYTctYWQwMS0zNmZjMTVlOTdk"
    "ZjgiLCAiYWlkIjogIjAiLCAibmV0IjogImtjcCIsICJ0eXBlIjogImR0bHMiLCAiaG9zdCI6ICIiLCAicGF0"
    "aCI6ICIiLCAidGxzIjogIiJ9"
)
UID = "addf213a-e01f-4fa7-ad01-36fc15e97df8"


def b64link(data: dict[str, Any], urlsafe: bool = False, pad: bool = True) -> str:
    """A v2 link for ``data`` with the chosen base64 flavour."""
    raw = json.dumps(data).encode()
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return "vmess://" + (text if pad else text.rstrip("="))


def fields(**kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"v": "2", "ps": "n", "add": "127.0.0.1", "port": "1234", "id": UID}
    data.update(kw)
    return data


class DesignLinkTests(SynchronousTestCase):
    """The link in the design notes."""

    def test_fields(self) -> None:
        raw = json.loads(base64.b64decode(DESIGN_LINK[len("vmess://"):]))
        self.assertEqual(raw, {
            "v": "2", "ps": "ip_207.246.108.36", "add": "207.246.108.36", "port": "8080",
            "id": UID, "aid": "0", "net": "kcp", "type": "dtls", "host": "", "path": "",
            "tls": "",
        })
        link = parse_link(DESIGN_LINK)
        self.assertEqual(link, VmessLink(
            add="207.246.108.36", port=8080, id=UID, ps="ip_207.246.108.36", aid=0,
            scy="auto", net="kcp", type="dtls", host="", path="", tls=""))

    def test_outbound(self) -> None:
        self.assertEqual(link_to_outbound(DESIGN_LINK), {
            "protocol": "vmess",
            "tag": "ip_207.246.108.36",
            "settings": {"vnext": [{
                "address": "207.246.108.36", "port": 8080,
                "users": [{"id": UID, "alterId": 0, "security": "auto", "level": 0}],
            }]},
            "streamSettings": {"network": "kcp", "security": "none",
                               "kcpSettings": {"header": {"type": "dtls"}}},
        })

    def test_client_config(self) -> None:
        config = client_config_from_link(DESIGN_LINK)
        self.assertEqual(config["inbounds"], [{
            "tag": "socks-in", "listen": "127.0.0.1", "port": 1080, "protocol": "socks",
            "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"},
        }])
        self.assertEqual(config["outbounds"][0], link_to_outbound(DESIGN_LINK))
        self.assertEqual(config["outbounds"][1],
                         {"tag": "direct", "protocol": "freedom", "settings": {}})

    def test_client_config_other_socks(self) -> None:
        config = client_config_from_link(DESIGN_LINK, socks="0.0.0.0:7777")
        inbound = config["inbounds"][0]
        self.assertEqual((inbound["listen"], inbound["port"], inbound["settings"]["ip"]),
                         ("0.0.0.0", 7777, "127.0.0.1"))

    def test_round_trips(self) -> None:
        link = parse_link(DESIGN_LINK)
        self.assertEqual(parse_link(link.to_link()), link)
        self.assertEqual(outbound_to_link(link.to_outbound()), link)
        self.assertEqual(parse_link(link.to_url()), link)


class EncodingTests(SynchronousTestCase):
    """Values as strings or numbers; base64 flavours; the URL form."""

    def test_numbers_or_strings(self) -> None:
        a = parse_link(b64link(fields(port="443", aid="4", v="2")))
        b = parse_link(b64link(fields(port=443, aid=4, v=2)))
        self.assertEqual(a, b)
        self.assertEqual((a.port, a.aid, a.v), (443, 4, "2"))

    def test_base64_flavours(self) -> None:
        data = fields(ps="?>?>~~~ name with ünïcode", path="/?>>")
        expected = parse_link(b64link(data))
        for urlsafe in (False, True):
            for pad in (False, True):
                self.assertEqual(parse_link(b64link(data, urlsafe, pad)), expected)
        wrapped = b64link(data)
        wrapped = wrapped[:20] + "\n" + wrapped[20:] + "\n"
        self.assertEqual(parse_link("  " + wrapped), expected)

    def test_missing_optional_fields(self) -> None:
        link = parse_link(b64link({"add": "example.com", "port": 80, "id": UID}))
        self.assertEqual(link, VmessLink(add="example.com", port=80, id=UID))
        self.assertEqual(link.to_outbound()["streamSettings"],
                         {"network": "tcp", "security": "none"})

    def test_case_and_aliases(self) -> None:
        link = parse_link(b64link(fields(net="WebSocket", scy="AES-128-GCM", tls="TLS")))
        self.assertEqual((link.net, link.scy, link.tls), ("ws", "aes-128-gcm", "tls"))
        self.assertEqual(parse_link(b64link(fields(net="mkcp"))).net, "kcp")
        self.assertEqual(parse_link(b64link(fields(tls="none"))).tls, "")

    def test_uuid_normalised(self) -> None:
        link = parse_link(b64link(fields(id=UID.upper().replace("-", ""))))
        self.assertEqual(link.id, UID)

    def test_url_form(self) -> None:
        link = parse_link(
            f"vmess://{UID}@example.com:443?type=ws&encryption=chacha20-poly1305&security=tls"
            "&path=%2Fws%3Fed%3D2048&host=cdn.example.com&sni=sni.example.com&alpn=h2%2Chttp%2F1.1"
            "&allowInsecure=1#my%20server")
        self.assertEqual(link, VmessLink(
            add="example.com", port=443, id=UID, ps="my server", scy="chacha20-poly1305",
            net="ws", host="cdn.example.com", path="/ws?ed=2048", tls="tls",
            sni="sni.example.com", alpn="h2,http/1.1", allow_insecure=True))
        self.assertEqual(parse_link(link.to_url()), link)

    def test_url_form_kcp_seed_ipv6(self) -> None:
        link = parse_link(f"vmess://{UID}@[::1]:8080?type=kcp&headerType=dtls&seed=s%20eed")
        self.assertEqual((link.add, link.port, link.net, link.type, link.path),
                         ("::1", 8080, "kcp", "dtls", "s eed"))
        self.assertIn("@[::1]:8080?", link.to_url())
        self.assertEqual(parse_link(link.to_url()), link)

    def test_url_form_defaults(self) -> None:
        link = parse_link(f"vmess://{UID}@127.0.0.1:80")
        self.assertEqual(link, VmessLink(add="127.0.0.1", port=80, id=UID))

    def test_v2rayn_std_variant(self) -> None:
        link = parse_link(f"vmess://tcp+tls:{UID}@h.example:443?type=http&host=a.example"
                          "&path=%2Fx#n")
        self.assertEqual((link.net, link.tls, link.type, link.host, link.path, link.ps),
                         ("tcp", "tls", "http", "a.example", "/x", "n"))

    def test_url_form_refuses_alter_id(self) -> None:
        link = parse_link(b64link(fields(aid=64)))
        e = self.assertRaises(LinkError, link.to_url)
        self.assertEqual(e.field, "aid")


class MappingTests(SynchronousTestCase):
    """Each supported combination maps like v2rayN maps it, and back."""

    def check(self, data: dict[str, Any], stream: dict[str, Any]) -> VmessLink:
        link = parse_link(b64link(data))
        outbound = link.to_outbound()
        self.assertEqual(outbound["streamSettings"], stream)
        warnings: list[str] = []
        self.assertEqual(outbound_to_link(outbound, warnings.append), link.canonical())
        self.assertEqual(warnings, [])
        return link

    def test_tcp_plain_ignores_host_path(self) -> None:
        link = self.check(fields(net="tcp", type="none", host="h", path="/p"),
                          {"network": "tcp", "security": "none"})
        self.assertEqual((link.canonical().host, link.canonical().path), ("", ""))

    def test_tcp_http(self) -> None:
        self.check(fields(net="tcp", type="http", host="a.com, b.com", path="/x,/y"), {
            "network": "tcp", "security": "none",
            "tcpSettings": {"header": {"type": "http", "request": {
                "path": ["/x", "/y"], "headers": {"Host": ["a.com", "b.com"]}}}},
        })

    def test_tcp_http_bare(self) -> None:
        self.check(fields(net="tcp", type="http"), {
            "network": "tcp", "security": "none",
            "tcpSettings": {"header": {"type": "http", "request": {}}}})

    def test_kcp_headers_and_seed(self) -> None:
        for header in linkfields.KCP.header_types:
            self.check(fields(net="kcp", type=header, path="the seed", host="ignored"), {
                "network": "kcp", "security": "none",
                "kcpSettings": {"header": {"type": header}, "seed": "the seed"}})
        self.check(fields(net="kcp"), {"network": "kcp", "security": "none",
                                       "kcpSettings": {"header": {"type": "none"}}})

    def test_ws(self) -> None:
        self.check(fields(net="ws", host="h.example", path="/ws", type="none"), {
            "network": "ws", "security": "none",
            "wsSettings": {"path": "/ws", "headers": {"Host": "h.example"}}})
        self.check(fields(net="ws"), {"network": "ws", "security": "none", "wsSettings": {}})

    def test_ws_tls(self) -> None:
        link = self.check(
            fields(net="ws", host="h.example", path="/ws", tls="tls", alpn="h2, http/1.1",
                   allowInsecure=True),
            {"network": "ws", "security": "tls",
             "wsSettings": {"path": "/ws", "headers": {"Host": "h.example"}},
             "tlsSettings": {"serverName": "h.example", "alpn": ["h2", "http/1.1"],
                             "allowInsecure": True}})
        self.assertEqual(link.canonical().sni, "h.example")

    def test_tls_sni_wins(self) -> None:
        self.check(fields(net="tcp", tls="tls", sni="s.example", fp="chrome"),
                   {"network": "tcp", "security": "tls",
                    "tlsSettings": {"serverName": "s.example"}})

    def test_tcp_http_tls_sni_from_first_host(self) -> None:
        link = self.check(fields(net="tcp", type="http", tls="tls", host="a.com,b.com"), {
            "network": "tcp", "security": "tls",
            "tcpSettings": {"header": {"type": "http", "request": {
                "headers": {"Host": ["a.com", "b.com"]}}}},
            "tlsSettings": {"serverName": "a.com"}})
        self.assertEqual(link.canonical().sni, "a.com")

    def test_kcp_tls(self) -> None:
        self.check(fields(net="kcp", tls="tls", type="srtp"), {
            "network": "kcp", "security": "tls", "kcpSettings": {"header": {"type": "srtp"}},
            "tlsSettings": {}})

    def test_user_fields(self) -> None:
        outbound = parse_link(b64link(fields(aid="64", scy="none", ps=""))).to_outbound()
        self.assertNotIn("tag", outbound)
        self.assertEqual(outbound["settings"]["vnext"][0]["users"],
                         [{"id": UID, "alterId": 64, "security": "none", "level": 0}])

    def test_explicit_tag(self) -> None:
        self.assertEqual(parse_link(b64link(fields())).to_outbound("x")["tag"], "x")

    def test_h2_grpc_transports(self) -> None:
        """h2 (or V2Ray's name http) and grpc: v2rayN's fields (grpc: the service name in
        path, the mode in type, the authority in host)."""
        for net in ("h2", "http"):
            link = parse_link(b64link(fields(net=net, host="a.example, b.example",
                                             path="/h2", tls="tls")))
            self.assertEqual(link.to_outbound()["streamSettings"], {
                "network": "h2", "security": "tls",
                "httpSettings": {"host": ["a.example", "b.example"], "path": "/h2"},
                "tlsSettings": {"serverName": "a.example"}})
        link = parse_link(b64link(fields(net="grpc", type="multi", host="auth.example",
                                         path="my.Service", tls="tls", sni="s.example")))
        self.assertEqual(link.to_outbound()["streamSettings"], {
            "network": "grpc", "security": "tls",
            "grpcSettings": {"serviceName": "my.Service", "multiMode": True,
                             "authority": "auth.example"},
            "tlsSettings": {"serverName": "s.example"}})
        self.assertEqual(parse_link(link.to_link()), link.canonical())
        gun = parse_link(b64link(fields(net="grpc", path="svc")))
        self.assertEqual(gun.canonical().type, "gun")
        self.assertEqual(gun.to_outbound()["streamSettings"]["grpcSettings"],
                         {"serviceName": "svc"})

    def test_unsupported_transports(self) -> None:
        self.patch(registry, "UNSUPPORTED", (registry.UnsupportedNetwork("pigeon"),))
        for net, name in (("pigeon", "pigeon"),):
            link = parse_link(b64link(fields(net=net)))
            e = self.assertRaises(UnsupportedTransportError, link.to_outbound)
            self.assertEqual(e.field, "net")
            self.assertIn(f"transport {name!r} is not supported", str(e))
            self.assertRaises(UnsupportedTransportError, client_config_from_link,
                              b64link(fields(net=net)))

    def test_outbound_spelling_variants(self) -> None:
        outbound = {
            "protocol": "VMess", "tag": "t",
            "settings": {"vnext": [{"address": "h.example", "port": "443", "users": [
                {"id": UID, "alterId": "0"}]}]},
            "streamSettings": {"network": "websocket", "security": "tls",
                               "wsSettings": {"headers": {"host": "x"}},
                               "tlsSettings": {"alpn": "h2", "allowInsecure": "true"}},
        }
        self.assertEqual(outbound_to_link(outbound, lambda m: None), VmessLink(
            add="h.example", port=443, id=UID, ps="t", net="ws", host="x", tls="tls",
            sni="x", alpn="h2", allow_insecure=True))

    def test_outbound_dropped_settings_warn(self) -> None:
        outbound = parse_link(b64link(fields(net="kcp", type="dtls"))).to_outbound()
        outbound["streamSettings"]["kcpSettings"]["mtu"] = 1200
        outbound["settings"]["vnext"][0]["users"][0]["level"] = 1
        outbound["settings"]["vnext"].append(outbound["settings"]["vnext"][0])
        outbound["mux"] = {"enabled": True}
        warnings: list[str] = []
        link = outbound_to_link(outbound, warnings.append)
        self.assertEqual(link.type, "dtls")
        self.assertEqual(sorted(warnings), sorted([
            "settings.vnext: a vmess link holds one server; using the first of 2",
            "settings.vnext[0].users[0].level 1 cannot be carried by a vmess link; dropped",
            "streamSettings.kcpSettings.mtu cannot be carried by a vmess link; dropped",
            "mux cannot be carried by a vmess link; dropped",
        ]))

    def test_find_outbound(self) -> None:
        vm = parse_link(b64link(fields())).to_outbound()
        config = {"outbounds": [{"protocol": "freedom", "tag": "direct"}, vm]}
        self.assertIs(find_outbound(config), vm)
        self.assertIs(find_outbound(config, "n"), vm)
        e = self.assertRaises(LinkError, find_outbound, config, "nope")
        self.assertEqual(str(e), "cannot make a link: --outbound: no outbound tagged "
                                 "'nope' (tags: direct, n)")
        e = self.assertRaises(LinkError, find_outbound, {"outbounds": config["outbounds"][:1]})
        self.assertEqual(str(e), "cannot make a link: outbounds: the config has no outbound "
                                 "with a share link (vmess, vless, trojan, shadowsocks)")


class ErrorTests(SynchronousTestCase):
    """Every malformed link: one line, naming the field."""

    def error(self, link: str) -> LinkError:
        e = self.assertRaises(LinkError, parse_link, link)
        self.assertNotIn("\n", str(e))
        self.assertTrue(str(e).startswith(f"invalid vmess link: {e.field}: "), str(e))
        return e

    def test_messages(self) -> None:
        cases = [
            ("", "link", "is empty"),
            ("example.com", "scheme", "expected a link starting with vmess://"),
            ("ss://abc", "scheme", "expected vmess://, got ss://"),
            ("vmess://", "body", "nothing after vmess://"),
            ("vmess://***", "body", "not valid base64 (expected vmess:// followed by base64 of "
             "a JSON object, or vmess://uuid@host:port?...)"),
            ("vmess://" + base64.b64encode(b"\xff\xfe").decode(), "body",
             "base64 does not decode to UTF-8 text"),
            ("vmess://" + base64.b64encode(b"{nope").decode(), "body",
             "not valid JSON after base64 decoding: Expecting property name enclosed in "
             "double quotes (column 2)"),
            ("vmess://" + base64.b64encode(b"[" * 100_000).decode(), "body",
             "not valid JSON after base64 decoding: nested too deeply"),
            ("vmess://" + base64.b64encode(b"[1]").decode(), "body",
             "expected a JSON object, got list"),
            (b64link({"port": 1, "id": UID}), "add", "is missing (the server address)"),
            (b64link({"add": "a b", "port": 1, "id": UID}), "add",
             "not a host name or IP address: 'a b'"),
            (b64link({"add": "h", "id": UID}), "port", "is missing (the port)"),
            (b64link({"add": "h", "port": "", "id": UID}), "port", "is missing (the port)"),
            (b64link({"add": "h", "port": 0, "id": UID}), "port", "port out of range 1-65535: 0"),
            (b64link({"add": "h", "port": "65536", "id": UID}), "port",
             "port out of range 1-65535: 65536"),
            (b64link({"add": "h", "port": "http", "id": UID}), "port",
             "expected a number 1-65535, got 'http'"),
            (b64link({"add": "h", "port": True, "id": UID}), "port",
             "expected a number 1-65535, got true"),
            (b64link({"add": "h", "port": 1}), "id", "is missing (the user id, a UUID)"),
            (b64link({"add": "h", "port": 1, "id": "not-a-uuid"}), "id",
             "not a valid UUID: 'not-a-uuid'"),
            (b64link({"add": "h", "port": 1, "id": UID + "0"}), "id",
             f"not a valid UUID: '{UID}0'"),
            (b64link(fields(aid=70000)), "aid", "alterId out of range 0-65535: 70000"),
            (b64link(fields(net="carrier-pigeon")), "net",
             "unknown transport 'carrier-pigeon' (expected one of tcp, kcp, ws, h2, grpc, quic)"),
            (b64link(fields(net="kcp", type="http")), "type",
             "unknown mKCP header type 'http' (expected one of none, srtp, utp, wechat-video, "
             "dtls, wireguard)"),
            (b64link(fields(net="tcp", type="dtls")), "type",
             "unknown tcp header type 'dtls' (expected none or http)"),
            (b64link(fields(scy="rot13")), "scy",
             "unknown VMess security 'rot13' (expected one of auto, aes-128-gcm, "
             "chacha20-poly1305, none, zero)"),
            (b64link(fields(tls="reality")), "tls",
             "'reality' is not supported by vtwist (expected tls or empty)"),
            (b64link(fields(ps=["x"])), "ps", "expected a string, got list"),
            (b64link(fields(allowInsecure="maybe")), "allowInsecure",
             'expected true or false, got "maybe"'),
            (f"vmess://{UID}@h.example:99999", "port", "port out of range 1-65535: 99999"),
            (f"vmess://{UID}@h.example", "port", "is missing (the port)"),
            ("vmess://nope@h.example:1", "id", "not a valid UUID: 'nope'"),
            (f"vmess://{UID}@[::1:80", "add", "malformed [IPv6] address in '[::1:80'"),
            (f"vmess://{UID}@h:1?type=pigeon", "type",
             "unknown transport 'pigeon' (expected one of tcp, kcp, ws, h2, grpc, quic)"),
            (f"vmess://{UID}@h:1?security=reality", "security",
             "'reality' is not supported by vtwist (expected tls or empty)"),
            (f"vmess://{UID}@h:1?encryption=rot13", "encryption",
             "unknown VMess security 'rot13' (expected one of auto, aes-128-gcm, "
             "chacha20-poly1305, none, zero)"),
        ]
        for link, field, message in cases:
            e = self.error(link)
            self.assertEqual((e.field, e.message), (field, message), link)

    def test_unsupported_transport_message(self) -> None:
        self.patch(registry, "UNSUPPORTED", (registry.UnsupportedNetwork("pigeon"),))
        e = self.assertRaises(LinkError, link_to_outbound, b64link(fields(net="pigeon")))
        self.assertEqual(str(e), "invalid vmess link: net: transport 'pigeon' is not "
                                 "supported by vtwist yet (supported: "
                                 f"{', '.join(registry.link_names())})")

    def test_outbound_errors(self) -> None:
        good = parse_link(b64link(fields())).to_outbound()
        cases: list[tuple[dict[str, Any], str]] = [
            ({"protocol": "freedom"},
             "cannot make a link: protocol: freedom outbounds have no share link (links "
             "stand for vmess, vless, trojan, shadowsocks)"),
            ({"protocol": "vmess", "settings": {}},
             "cannot make a vmess link: settings.vnext: expected a non-empty array of servers"),
            ({**good, "settings": {"vnext": [{"address": "h", "port": 1, "users": [{}]}]}},
             "cannot make a vmess link: settings.vnext[0].users[0].id: is missing (the user "
             "id, a UUID)"),
            ({**good, "streamSettings": {"network": "domainsocket",
                                         "dsSettings": {"path": "/run/v.sock"}}},
             "cannot make a vmess link: streamSettings.network: transport 'domainsocket' has "
             f"no share-link form (supported: {', '.join(registry.link_names())})"),
            ({**good, "streamSettings": {"network": "tcp", "security": "xtls"}},
             "cannot make a vmess link: streamSettings.security: 'xtls' is not supported by "
             "vtwist (expected tls or empty)"),
        ]
        for outbound, message in cases:
            e = self.assertRaises(LinkError, outbound_to_link, outbound, lambda m: None)
            self.assertEqual(str(e), message)

    def test_socks_errors(self) -> None:
        self.assertEqual(parse_socks("1080"), ("127.0.0.1", 1080))
        self.assertEqual(parse_socks("[::1]:1081"), ("::1", 1081))
        self.assertEqual(parse_socks("0.0.0.0:1"), ("0.0.0.0", 1))
        for bad, message in (("nope", "expected HOST:PORT, got 'nope'"),
                             ("h:0", "port out of range 1-65535 in 'h:0'"),
                             ("h:x", "port out of range 1-65535 in 'h:x'"),
                             ("[::1]1080", "expected HOST:PORT, got '[::1]1080'")):
            e = self.assertRaises(LinkError, parse_socks, bad)
            self.assertEqual(str(e), f"bad address: --socks: {message}")


class SubscriptionTests(SynchronousTestCase):
    """Subscription bodies: base64 lists of links."""

    def body(self) -> str:
        lines = [
            b64link(fields(ps="alpha", net="ws", path="/a")),
            "",
            "ss://YWVzLTI1Ni1nY206cGFzcw@127.0.0.1:8388#ss",
            "   ",
            b64link(fields(ps="beta", net="kcp", type="dtls")),
            b64link(fields(ps="alpha", port=2)),
            b64link(fields(ps="grpc-one", net="grpc")),
            "vmess://@@@",
            "just some words",
            f"vmess://{UID}@127.0.0.1:3?type=tcp#gamma",
            b64link(fields(ps="")),
        ]
        return base64.b64encode("\r\n".join(lines).encode()).decode()

    def test_outbounds(self) -> None:
        warnings: list[str] = []
        outbounds = subscription_outbounds(self.body(), warnings.append)
        self.assertEqual([o["tag"] for o in outbounds],
                         ["alpha", "ss", "beta", "alpha #2", "grpc-one", "gamma",
                          "127.0.0.1:1234"])
        self.assertEqual(outbounds[1]["protocol"], "shadowsocks")
        self.assertEqual(outbounds[2]["streamSettings"]["kcpSettings"],
                         {"header": {"type": "dtls"}})
        self.assertEqual(warnings, [
            "subscription line 8: skipped (malformed): invalid vmess link: add: is missing "
            "(the server address)",
            "subscription line 9: skipped (not a link)",
        ])

    def test_flavours(self) -> None:
        plain = "\n".join([b64link(fields(ps="a")), b64link(fields(ps="b"))])
        b64 = base64.urlsafe_b64encode(plain.encode()).decode().rstrip("=")
        for body in (plain, b64, "\n" + b64 + "\n"):
            names = [o["tag"] for o in subscription_outbounds(body, lambda m: None)]
            self.assertEqual(names, ["a", "b"])

    def test_pick(self) -> None:
        body = self.body()
        quiet = {"warn": lambda m: None}
        first = client_config_from_subscription(body, None, "127.0.0.1:1", **quiet)
        self.assertEqual(first["outbounds"][0]["tag"], "alpha")
        self.assertEqual(first["inbounds"][0]["port"], 1)
        self.assertEqual(client_config_from_subscription(
            body, "beta", "127.0.0.1:1", **quiet)["outbounds"][0]["tag"], "beta")
        self.assertEqual(client_config_from_subscription(
            body, "GAMMA", "127.0.0.1:1", **quiet)["outbounds"][0]["tag"], "gamma")
        self.assertEqual(client_config_from_subscription(
            body, "4", "127.0.0.1:1", **quiet)["outbounds"][0]["tag"], "alpha #2")
        e = self.assertRaises(LinkError, client_config_from_subscription,
                              body, "delta", "127.0.0.1:1", **quiet)
        self.assertEqual(str(e), "invalid subscription: --pick: no link named 'delta' (names: "
                                 "'alpha', 'ss', 'beta', 'alpha #2', 'grpc-one', "
                                 "'gamma', '127.0.0.1:1234')")

    def test_errors(self) -> None:
        e = self.assertRaises(LinkError, subscription_outbounds, "%%%", lambda m: None)
        self.assertEqual(str(e), "invalid subscription: body: not base64 and not a list of links")
        only_ss = encode_subscription(["ss://x@h:1"])
        e = self.assertRaises(LinkError, client_config_from_subscription, only_ss, None,
                              "127.0.0.1:1080", lambda m: None)
        self.assertEqual(str(e), "invalid subscription: links: no usable links")

    def test_encode(self) -> None:
        items = [b64link(fields(ps="a")), b64link(fields(ps="b"))]
        parsed = parse_subscription(encode_subscription(items), lambda m: None)
        self.assertEqual([p.ps for p in parsed], ["a", "b"])

    def test_default_warning_goes_to_twisted_log(self) -> None:
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        subscription_outbounds(encode_subscription(
            ["trojan://x@h:0", b64link(fields())]))
        self.assertEqual([e.get("text") for e in events if e.get("log_namespace") ==
                          "vtwist.links"],
                         ["subscription line 1: skipped (malformed): invalid trojan link: "
                          "port: port out of range 1-65535: 0"])


# -- property tests ----------------------------------------------------------------------
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
hostnames = st.builds(lambda parts: ".".join(parts), st.lists(label, min_size=1, max_size=4))
addresses = st.one_of(
    hostnames,
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
lists = st.lists(st.text(st.characters(exclude_categories=("Cs",), exclude_characters=","),
                         min_size=1, max_size=8).map(str.strip).filter(bool),
                 max_size=3).map(",".join)


@st.composite
def vmess_links(draw: st.DrawFn, url_form: bool = False) -> VmessLink:
    net = draw(st.sampled_from(registry.link_names()))
    fields_ = registry.lookup(net).link_fields
    header = st.sampled_from(fields_.header_types or ("none",))
    securities = getattr(fields_, "securities", None)  # quic: host is the security
    host_values = st.sampled_from(securities) if securities else \
        lists if net in ("tcp", "h2") else texts
    tls = draw(st.sampled_from(["", "tls"]))
    return VmessLink(
        add=draw(addresses),
        port=draw(st.integers(1, 65535)),
        id=str(draw(st.uuids())),
        ps=draw(texts),
        aid=0 if url_form else draw(st.integers(0, 65535)),
        scy=draw(st.sampled_from(SECURITIES)),
        net=net,
        type=draw(header),
        host=draw(host_values),
        path=draw(lists if net == "tcp" else texts),
        tls=tls,
        sni=draw(texts),
        alpn=draw(lists),
        fp=draw(st.sampled_from(["", "chrome"])),
        allow_insecure=draw(st.booleans()),
    )


class PropertyTests(SynchronousTestCase):
    """Round trips for every supported combination."""

    @settings(max_examples=150, deadline=None)
    @given(vmess_links())
    def test_link_text_round_trip(self, link: VmessLink) -> None:
        self.assertEqual(parse_link(link.to_link()), link)

    @settings(max_examples=150, deadline=None)
    @given(vmess_links())
    def test_outbound_round_trip(self, link: VmessLink) -> None:
        canonical = link.canonical()
        outbound = link.to_outbound()
        json.dumps(outbound)
        warnings: list[str] = []
        self.assertEqual(outbound_to_link(outbound, warnings.append), canonical)
        self.assertEqual(warnings, [])
        self.assertEqual(canonical.to_outbound(), outbound)
        self.assertEqual(canonical.canonical(), canonical)

    @settings(max_examples=150, deadline=None)
    @given(vmess_links(url_form=True))
    def test_url_round_trip(self, link: VmessLink) -> None:
        canonical = link.canonical()
        self.assertEqual(parse_link(canonical.to_url()), canonical)
        self.assertEqual(parse_link(link.to_url()), canonical)

    @settings(max_examples=100, deadline=None)
    @given(vmess_links(), st.booleans(), st.booleans(), st.booleans())
    def test_encoding_variants(self, link: VmessLink, numbers: bool, urlsafe: bool,
                               pad: bool) -> None:
        data = link.to_json()
        if numbers:
            data["port"], data["aid"], data["v"] = link.port, link.aid, 2
        self.assertEqual(parse_link(b64link(data, urlsafe, pad)), link)

    @settings(max_examples=100, deadline=None)
    @given(st.lists(vmess_links(), min_size=1, max_size=5))
    def test_subscription_round_trip(self, items: list[VmessLink]) -> None:
        body = encode_subscription([i.to_link() for i in items])
        self.assertEqual(parse_subscription(body, self.fail), items)

    @settings(max_examples=100, deadline=None)
    @given(st.text(max_size=60))
    def test_garbage_gives_link_error(self, text: str) -> None:
        for candidate in (text, "vmess://" + text):
            try:
                parse_link(candidate).to_outbound()
            except LinkError as e:
                self.assertNotIn("\n", str(e))

    def test_canonical_changes_only_meaningless_fields(self) -> None:
        link = VmessLink(add="h", port=1, id=str(uuid.UUID(int=1)), net="ws", type="dtls",
                         sni="x", fp="chrome", alpn="h2")
        self.assertEqual(link.canonical(), replace(link, type="none", sni="", fp="", alpn=""))
