"""The http inbound's settings, as V2Ray 4.34's JSON spells them, and the factory they build."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.policy import LevelPolicy, Policy
from vtwist.proxy.http.settings import HttpInboundSettings

from .helpers import ConfigErrorMixin


def config(settings: Any = None, **inbound: Any) -> dict[str, Any]:
    entry = {"protocol": "http", "port": 8080, "listen": "127.0.0.1", **inbound}
    if settings is not None:
        entry["settings"] = settings
    return {"inbounds": [entry], "outbounds": [{"protocol": "freedom"}]}


class HttpSettingsTests(ConfigErrorMixin, SynchronousTestCase):
    def test_defaults(self) -> None:
        parsed = parse_config(config())
        self.assertEqual(parsed.inbounds[0].settings, HttpInboundSettings())

    def test_all_fields(self) -> None:
        parsed = parse_config(config({
            "accounts": [{"user": "a", "pass": "1"}, {"user": "b", "pass": ""},
                         {"user": "a", "pass": "2"}],
            "allowTransparent": True, "timeout": 60, "userLevel": 1}))
        settings = parsed.inbounds[0].settings
        self.assertEqual(settings.accounts, {"a": "2", "b": ""})  # later wins, as V2Ray
        self.assertTrue(settings.allow_transparent)
        self.assertEqual((settings.timeout, settings.user_level), (60, 1))
        self.assertTrue(any("timeout is deprecated" in w for w in parsed.warnings))

    def test_protocol_name_any_case(self) -> None:
        parsed = parse_config(config(protocol="HTTP"))
        self.assertEqual(parsed.inbounds[0].protocol, "http")

    def test_unknown_key_warns(self) -> None:
        parsed = parse_config(config({"allowTransparnt": True}))
        self.assertTrue(any("allowTransparnt" in w for w in parsed.warnings), parsed.warnings)

    def test_bad_values(self) -> None:
        self.assertConfigError(config({"accounts": [{"user": "a:b", "pass": "x"}]}),
                               "inbounds[0].settings.accounts[0].user: a user name may not "
                               "contain ':' (Basic authentication)")
        with self.assertRaises(ConfigError):
            parse_config(config({"userLevel": -1}))
        with self.assertRaises(ConfigError):
            parse_config(config({"allowTransparent": "yes"}))

    def test_build_factory(self) -> None:
        from vtwist.proxy.http.inbound import inbound
        from vtwist.testing.tunnels import RecordingTunnels
        from vtwist.tunnel.inbound import BuildContext

        parsed = parse_config(config({"accounts": [{"user": "u", "pass": "p"}],
                                      "timeout": 30}, tag="h"))
        ctx = BuildContext(Clock(), RecordingTunnels(Clock()),
                           Policy({0: LevelPolicy(handshake=2)}))
        factory = inbound.build_factory(parsed.inbounds[0], ctx)
        self.assertEqual((factory.tag, factory.accounts), ("h", {"u": "p"}))
        self.assertEqual((factory.policy.handshake, factory.policy.conn_idle), (2, 30.0))
