"""The rest of V2Ray 4.34's config surface: legacy top-level keys, ``allocate``,
``proxySettings``, ``sniffing``/``domainOverride``, protocol names in any case, and the
VMess ``detour``."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import ConfigErrorMixin
from vtwist.config.loader import parse_config
from vtwist.config.model import AllocateSettings, SniffingSettings

ID = "b831381d-6324-4d53-ad4f-8cda48b30811"
SOCKS = {"protocol": "socks", "port": 1080, "listen": "127.0.0.1", "tag": "s",
         "settings": {"auth": "noauth"}}
VMESS_IN = {"protocol": "vmess", "port": 10086, "tag": "v",
            "settings": {"clients": [{"id": ID}]}}
FREEDOM = {"protocol": "freedom", "tag": "direct"}
BLOCK = {"protocol": "blackhole", "tag": "block"}


def vmess_out(tag: str, port: int = 10086, **extra: object) -> dict[str, object]:
    out: dict[str, object] = {
        "protocol": "vmess", "tag": tag,
        "settings": {"vnext": [{"address": "127.0.0.1", "port": port,
                                "users": [{"id": ID}]}]}}
    out.update(extra)
    return out


class LegacyKeysTests(SynchronousTestCase, ConfigErrorMixin):
    """A V2Ray 3.x config, read in 4.34's order with a warning naming the modern form."""

    def test_v3_config(self) -> None:
        c = parse_config({
            "port": 1080,
            "inbound": {"protocol": "socks", "listen": "127.0.0.1",
                        "settings": {"auth": "noauth"}},
            "inboundDetour": [dict(VMESS_IN)],
            "inbounds": [dict(SOCKS, port=1081, tag="modern")],
            "outbound": dict(FREEDOM),
            "outboundDetour": [dict(BLOCK)],
            "outbounds": [vmess_out("proxy")],
        })
        self.assertEqual([(i.protocol, i.ports, i.tag) for i in c.inbounds],
                         [("socks", [1080], ""), ("vmess", [10086], "v"),
                          ("socks", [1081], "modern")])
        self.assertEqual([o.tag for o in c.outbounds], ["direct", "block", "proxy"])
        self.assertEqual(c.warnings, [
            'inbound: deprecated, use "inbounds": [ { ... } ] (its entries go first)',
            'inboundDetour: deprecated, use "inbounds": [ { ... }, ... ] (its entries go '
            'after "inbound", before "inbounds")',
            'outbound: deprecated, use "outbounds": [ { ... } ] (its entries go first)',
            'outboundDetour: deprecated, use "outbounds": [ { ... }, ... ] (its entries go '
            'after "outbound", before "outbounds")',
            'port: deprecated, set "port" in the inbound: "inbounds": [ { "port": 1080, '
            '... } ]',
        ])

    def test_top_level_port_only_fills_a_missing_port(self) -> None:
        c = parse_config({"port": 9, "inbounds": [dict(SOCKS)], "outbounds": [FREEDOM]})
        self.assertEqual(c.inbounds[0].ports, [1080])
        no_port = {k: v for k, v in SOCKS.items() if k != "port"}
        c = parse_config({"port": 9, "inbounds": [no_port], "outbounds": [FREEDOM]})
        self.assertEqual(c.inbounds[0].ports, [9])
        self.assertConfigError({"port": 9, "inbounds": [no_port, no_port],
                                "outbounds": [FREEDOM]}, "inbounds[1].port: is required")

    def test_errors_name_the_legacy_path(self) -> None:
        self.assertConfigError({"inbound": {"protocol": "socks"}, "outbound": FREEDOM},
                               "inbound.port: is required")
        self.assertConfigError(
            {"outboundDetour": [FREEDOM, {"protocol": "nope"}]},
            "outboundDetour[1].protocol: unsupported outbound protocol 'nope' (vtwist has: "
            + ", ".join(sorted(__import__("vtwist.config.registry", fromlist=["x"])
                               .OUTBOUND_MODULES)) + ")")
        self.assertConfigError({"inboundDetour": {}, "outbound": FREEDOM},
                               "inboundDetour: expected an array, got dict")

    def test_only_legacy_outbound_is_enough(self) -> None:
        c = parse_config({"outbound": FREEDOM})
        self.assertEqual(len(c.outbounds), 1)


class ProtocolCaseTests(SynchronousTestCase):
    def test_any_case(self) -> None:
        c = parse_config({"inbounds": [dict(VMESS_IN, protocol="VMess"),
                                       dict(SOCKS, protocol="SOCKS")],
                          "outbounds": [dict(FREEDOM, protocol="Freedom"),
                                        dict(vmess_out("p"), protocol="VMESS")]})
        self.assertEqual([i.protocol for i in c.inbounds], ["vmess", "socks"])
        self.assertEqual([o.protocol for o in c.outbounds], ["freedom", "vmess"])
        self.assertEqual(c.warnings, [])


class SniffingConfigTests(SynchronousTestCase, ConfigErrorMixin):
    def configFor(self, inbound: dict[str, object]) -> dict[str, object]:
        return {"inbounds": [dict(SOCKS, **inbound)], "outbounds": [FREEDOM]}

    def sniffing(self, **inbound: object) -> tuple[SniffingSettings, list[str]]:
        c = parse_config(self.configFor(inbound))
        return c.inbounds[0].sniffing, c.warnings

    def test_default_off(self) -> None:
        self.assertEqual(self.sniffing(), (SniffingSettings(False, []), []))

    def test_sniffing(self) -> None:
        s, warnings = self.sniffing(sniffing={"enabled": True, "destOverride": ["HTTP", "tls"]})
        self.assertEqual((s.enabled, s.dest_override), (True, ["http", "tls"]))
        self.assertEqual(warnings, [])
        s, _ = self.sniffing(sniffing={"enabled": True, "destOverride": "https,ssl"})
        self.assertEqual(s.dest_override, ["tls", "tls"])
        s, _ = self.sniffing(sniffing={"destOverride": ["http"]})
        self.assertFalse(s.enabled)

    def test_domain_override(self) -> None:
        s, warnings = self.sniffing(domainOverride=["http", "TLS"])
        self.assertEqual((s.enabled, s.dest_override), (True, ["http", "tls"]))
        self.assertEqual(warnings, [
            'inbounds[0].domainOverride: deprecated, use "sniffing": { "enabled": true, '
            '"destOverride": [ "http", "tls" ] }'])

    def test_sniffing_wins_over_domain_override(self) -> None:
        """4.34's GetEffectiveSniffingSettings: a ``sniffing`` object, even disabled, wins."""
        s, _ = self.sniffing(sniffing={"enabled": False}, domainOverride=["http"])
        self.assertFalse(s.enabled)

    def test_errors(self) -> None:
        self.assertConfigError({"sniffing": {"enabled": True, "destOverride": ["quic"]}},
                               "inbounds[0].sniffing.destOverride: expected http or tls "
                               "(https, ssl), got 'quic'")
        self.assertConfigError({"domainOverride": ["ftp"]},
                               "inbounds[0].domainOverride: expected http or tls (https, "
                               "ssl), got 'ftp'")
        self.assertConfigError({"sniffing": {"enabled": "yes"}},
                               'inbounds[0].sniffing.enabled: expected true or false, got "yes"')


class AllocateConfigTests(SynchronousTestCase, ConfigErrorMixin):
    def configFor(self, inbound: dict[str, object]) -> dict[str, object]:
        return {"inbounds": [dict(VMESS_IN, **inbound)], "outbounds": [FREEDOM]}

    def allocate(self, **inbound: object) -> AllocateSettings:
        return parse_config(self.configFor(inbound)).inbounds[0].allocate

    def test_default_always(self) -> None:
        self.assertEqual(self.allocate(), AllocateSettings("always", 5, 3))
        self.assertEqual(self.allocate(allocate={"strategy": "Always"}).strategy, "always")

    def test_random(self) -> None:
        a = self.allocate(port="10000-10010",
                          allocate={"strategy": "random", "refresh": 2, "concurrency": 4})
        self.assertEqual(a, AllocateSettings("random", 2, 4))
        self.assertEqual(self.allocate(port="10000-10010", allocate={"strategy": "random"}),
                         AllocateSettings("random", 5, 3))

    def test_errors(self) -> None:
        self.assertConfigError({"allocate": {"strategy": "sometimes"}},
                               "inbounds[0].allocate.strategy: expected always or random, "
                               "got 'sometimes'")
        self.assertConfigError({"port": "10000-10002",
                                "allocate": {"strategy": "random", "concurrency": 3}},
                               "inbounds[0].allocate.concurrency: not enough ports: 3 open "
                               "at a time needs a range of more than 3 ports, the inbound "
                               "has 3")
        self.assertConfigError({"port": "10000-10010",
                                "allocate": {"strategy": "random", "refresh": 0}},
                               "inbounds[0].allocate.refresh: expected an integer >= 1, got 0")


class ProxySettingsConfigTests(SynchronousTestCase, ConfigErrorMixin):
    def configFor(self, outbounds: object) -> object:
        return {"outbounds": outbounds} if isinstance(outbounds, list) else outbounds

    def test_chain(self) -> None:
        c = parse_config({"outbounds": [
            vmess_out("a", proxySettings={"tag": "b"}),
            vmess_out("b", 10087, proxySettings={"tag": "direct"}), FREEDOM]})
        self.assertEqual([o.proxy_tag for o in c.outbounds], ["b", "direct", ""])
        self.assertEqual(c.warnings, [])

    def test_stream_settings_ignored_with_warning(self) -> None:
        c = parse_config({"outbounds": [
            vmess_out("a", proxySettings={"tag": "direct"},
                      streamSettings={"network": "ws"}), FREEDOM]})
        self.assertEqual(c.warnings, [
            "outbounds[0].streamSettings: ignored (but for its TLS) while proxySettings is "
            "set: the connection to the server goes through outbound 'direct', as in V2Ray "
            "4.34"])

    def test_unknown_tag(self) -> None:
        self.assertConfigError([FREEDOM, vmess_out("a", proxySettings={"tag": "nope"})],
                               "outbounds[1].proxySettings.tag: no outbound has tag 'nope'")

    def test_missing_tag(self) -> None:
        self.assertConfigError([vmess_out("a", proxySettings={})],
                               "outbounds[0].proxySettings.tag: is required (the tag of the "
                               "outbound to dial through)")

    def test_cycle(self) -> None:
        self.assertConfigError(
            [FREEDOM, vmess_out("a", proxySettings={"tag": "b"}),
             vmess_out("b", proxySettings={"tag": "c"}),
             vmess_out("c", proxySettings={"tag": "a"})],
            "outbounds[3].proxySettings.tag: proxySettings chain loops: 'a' -> 'b' -> 'c' "
            "-> 'a'")
        self.assertConfigError([vmess_out("self", proxySettings={"tag": "self"})],
                               "outbounds[0].proxySettings.tag: proxySettings chain loops: "
                               "'self' -> 'self'")

    def test_legacy_path_in_error(self) -> None:
        self.assertConfigError({"outbound": vmess_out("a", proxySettings={"tag": "x"})},
                               "outbound.proxySettings.tag: no outbound has tag 'x'")


class DetourConfigTests(SynchronousTestCase):
    def test_detour_and_features(self) -> None:
        for settings in ({"detour": {"to": "dyn"}}, {"features": {"detour": {"to": "dyn"}}}):
            c = parse_config({"inbounds": [dict(VMESS_IN, settings=dict(
                {"clients": [{"id": ID}], "default": {"alterId": 8, "level": 1}}, **settings))],
                "outbounds": [FREEDOM]})
            s = c.inbounds[0].settings
            self.assertEqual((s.detour, s.default_alter_id, s.default_level), ("dyn", 8, 1))
            self.assertEqual(c.warnings, [])
