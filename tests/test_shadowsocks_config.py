"""Shadowsocks settings as V2Ray 4.34's JSON spells them (``infra/conf/shadowsocks.go``)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.config.loader import parse_config
from vtwist.proxy.shadowsocks.aead import evp_bytes_to_key

from .helpers import ConfigErrorMixin

SUPPORTED = ("supported: aes-128-gcm, aes-256-gcm, chacha20-poly1305 (chacha20-ietf-poly1305, "
             "aead_chacha20_poly1305), aead_aes_128_gcm, aead_aes_256_gcm, none (plain)")


def inbound(settings: Any) -> dict[str, Any]:
    return {"inbounds": [{"protocol": "shadowsocks", "port": 8388, "listen": "127.0.0.1",
                          "settings": settings}],
            "outbounds": [{"protocol": "freedom"}]}


def outbound(settings: Any) -> dict[str, Any]:
    return {"inbounds": [], "outbounds": [{"protocol": "shadowsocks", "settings": settings}]}


class InboundSettings(ConfigErrorMixin, SynchronousTestCase):
    def test_all_fields(self) -> None:
        parsed = parse_config(inbound({"method": "AES-256-GCM", "password": "pw",
                                       "email": "a@b", "level": 1, "network": "tcp,udp"}))
        s = parsed.inbounds[0].settings
        self.assertEqual(s.account.method.name, "aes-256-gcm")
        self.assertEqual(s.account.key, evp_bytes_to_key(b"pw", 32))
        self.assertEqual((s.email, s.level, s.networks), ("a@b", 1, ("tcp", "udp")))
        self.assertEqual(parsed.warnings, [])

    def test_network_defaults_and_udp_flag(self) -> None:
        s = parse_config(inbound({"method": "none", "password": "x"})).inbounds[0].settings
        self.assertEqual(s.networks, ("tcp",))
        s = parse_config(inbound({"method": "plain", "password": "x", "udp": True})
                         ).inbounds[0].settings
        self.assertEqual((s.account.method.name, s.networks), ("none", ("tcp", "udp")))
        s = parse_config(inbound({"method": "none", "password": "x", "network": ["udp"]})
                         ).inbounds[0].settings
        self.assertEqual(s.networks, ("udp",))

    def test_aliases(self) -> None:
        for alias, name in (("aead_aes_128_gcm", "aes-128-gcm"),
                            ("aead_aes_256_gcm", "aes-256-gcm"),
                            ("chacha20-ietf-poly1305", "chacha20-poly1305"),
                            ("aead_chacha20_poly1305", "chacha20-poly1305")):
            s = parse_config(inbound({"method": alias, "password": "x"})).inbounds[0].settings
            self.assertEqual(s.account.method.name, name)

    def test_stream_ciphers_refused(self) -> None:
        for method in ("aes-256-cfb", "rc4-md5", "chacha20"):
            self.assertConfigError(
                inbound({"method": method, "password": "x"}),
                f"inbounds[0].settings.method: unknown cipher method {method!r} ({SUPPORTED})")

    def test_missing_values(self) -> None:
        self.assertConfigError(inbound({"method": "aes-128-gcm"}),
                               "inbounds[0].settings.password: Shadowsocks password is not "
                               "specified")
        self.assertConfigError(inbound({"password": "x"}),
                               f"inbounds[0].settings.method: unknown cipher method '' "
                               f"({SUPPORTED})")

    def test_unknown_key_warns(self) -> None:
        parsed = parse_config(inbound({"method": "none", "password": "x", "pasword": "y"}))
        self.assertTrue(any("pasword" in w for w in parsed.warnings), parsed.warnings)

    def test_build_factory(self) -> None:
        from vtwist.config.registry import inbound_spec
        from vtwist.testing.tunnels import RecordingTunnels
        from vtwist.tunnel.inbound import BuildContext

        config = parse_config(inbound({"method": "none", "password": "x", "network": "udp"}))
        ctx = BuildContext(Clock(), RecordingTunnels(Clock()))
        factory = inbound_spec("shadowsocks").build_factory(config.inbounds[0], ctx)
        self.assertTrue(factory.listensDatagrams)
        self.assertIsNone(factory.streamEndpoint(Clock(), "127.0.0.1", 1, None))

    def test_unix_socket_listens_stream_only(self) -> None:
        """``listen`` a UNIX socket with ``network`` tcp,udp: the stream listener alone
        (no port needed) and one warning for the UDP side, never a failed UDP listen."""
        from vtwist.service import inbound_services
        from vtwist.testing.doubles import LogCapture
        from vtwist.testing.tunnels import RecordingTunnels
        from vtwist.tunnel.inbound import BuildContext

        data = inbound({"method": "none", "password": "x", "network": "tcp,udp"})
        del data["inbounds"][0]["port"]
        data["inbounds"][0]["listen"] = "@vtwist-ss"
        config = parse_config(data)
        ctx = BuildContext(Clock(), RecordingTunnels(Clock()))
        logs = LogCapture("vtwist.service")
        self.addCleanup(logs.stop)
        services = inbound_services(config.inbounds[0], ctx)
        self.assertEqual([type(s).__name__ for s in services], ["InboundService"])
        self.assertEqual(logs.lines(), [
            "shadowsocks @vtwist-ss/udp: no UDP on a UNIX socket, the stream listens alone "
            "(V2Ray 4.34 listens on one only for vmess, vless, trojan and http)"])


class OutboundSettings(ConfigErrorMixin, SynchronousTestCase):
    def test_servers(self) -> None:
        parsed = parse_config(outbound({"servers": [
            {"address": "ss.example.com", "port": 8388, "method": "chacha20-ietf-poly1305",
             "password": "pw", "email": "e", "level": 2},
            {"address": "[::1]", "port": 1, "method": "none", "password": "x", "ota": False}]}))
        servers = parsed.outbounds[0].settings.servers
        self.assertEqual([(s.address, s.port, s.account.method.name, s.email, s.level)
                          for s in servers],
                         [("ss.example.com", 8388, "chacha20-poly1305", "e", 2),
                          ("::1", 1, "none", "", 0)])

    def test_ota_warns(self) -> None:
        parsed = parse_config(outbound({"servers": [{"address": "1.2.3.4", "port": 1,
                                                     "method": "none", "password": "x",
                                                     "ota": True}]}))
        self.assertTrue(any("ota" in w for w in parsed.warnings), parsed.warnings)

    def test_errors(self) -> None:
        self.assertConfigError(outbound({"servers": []}),
                               "outbounds[0].settings.servers: 0 Shadowsocks server configured "
                               "(expected at least one)")
        self.assertConfigError(outbound({"servers": [{"port": 1, "method": "none",
                                                      "password": "x"}]}),
                               "outbounds[0].settings.servers[0].address: Shadowsocks server "
                               "address is not set")
        self.assertConfigError(outbound({"servers": [{"address": "a.b", "port": 0,
                                                      "method": "none", "password": "x"}]}),
                               "outbounds[0].settings.servers[0].port: expected an integer "
                               "1-65535, got 0")
        self.assertConfigError(outbound({"servers": [{"address": "a.b", "port": 1,
                                                      "method": "bf-cfb", "password": "x"}]}),
                               f"outbounds[0].settings.servers[0].method: unknown cipher "
                               f"method 'bf-cfb' ({SUPPORTED})")
