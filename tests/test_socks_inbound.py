"""socks inbound settings (V2Ray JSON) and the registry hook."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.config.model import InboundConfig
from vtwist.config.node import Node
from vtwist.policy import DEFAULT_POLICY, LevelPolicy, Policy
from vtwist.proxy.socks.inbound import SocksSettings, build_inbound_factory, parse_inbound_settings
from vtwist.proxy.socks.server import SocksServerFactory
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.inbound import BuildContext
from vtwist.tunnel.service import TunnelService


def parse(value: object) -> tuple[SocksSettings, list[str]]:
    warnings: list[str] = []
    return parse_inbound_settings(Node(value, "inbounds[0].settings", warnings.append)), warnings


class SettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        settings, warnings = parse({})
        self.assertEqual(settings, SocksSettings())
        self.assertEqual(warnings, [])

    def test_every_field(self) -> None:
        settings, warnings = parse({
            "auth": "password", "accounts": [{"user": "a", "pass": "1"}, {"user": "b", "pass": "2"}],
            "udp": True, "ip": "127.0.0.1", "userLevel": 1, "timeout": 30})
        self.assertEqual(settings, SocksSettings("password", {"a": "1", "b": "2"}, True,
                                                 "127.0.0.1", 1, 30))
        self.assertEqual(warnings, ["inbounds[0].settings: timeout is deprecated; use "
                                    "policy.levels.N.connIdle"])

    def test_unknown_key_warns(self) -> None:
        _, warnings = parse({"udp": False, "bogus": 1})
        self.assertEqual(warnings, ["inbounds[0].settings.bogus: unknown field, ignored"])

    def check_error(self, value: object, message: str) -> None:
        with self.assertRaises(ConfigError) as e:
            parse(value)
        self.assertEqual(str(e.exception), message)

    def test_errors(self) -> None:
        self.check_error({"auth": "secret"},
                         'inbounds[0].settings.auth: expected one of noauth, password, got "secret"')
        self.check_error({"auth": "password"}, "inbounds[0].settings.accounts: at least one "
                         'account is required when auth is "password"')
        self.check_error({"accounts": [{"pass": "x"}]},
                         "inbounds[0].settings.accounts[0].user: is required")
        self.check_error({"accounts": [{"user": "u", "pass": 5}]},
                         "inbounds[0].settings.accounts[0].pass: expected a string, got 5")
        self.check_error({"accounts": [{"user": "x" * 256}]},
                         "inbounds[0].settings.accounts[0].user: expected a user name of 1-255 bytes")
        self.check_error({"udp": "yes"}, 'inbounds[0].settings.udp: expected true or false, got "yes"')
        self.check_error({"ip": "not an ip!"},
                         "inbounds[0].settings.ip: expected an IP address, got 'not an ip!'")
        self.check_error({"userLevel": -1},
                         "inbounds[0].settings.userLevel: expected an integer >= 0, got -1")
        self.check_error([], "inbounds[0].settings: expected an object, got list")

    def test_through_the_loader(self) -> None:
        config = parse_config({
            "inbounds": [{"protocol": "socks", "port": 1080, "listen": "127.0.0.1", "tag": "in",
                          "settings": {"auth": "noauth", "udp": True}}],
            "outbounds": [{"protocol": "freedom"}]})
        self.assertEqual(config.inbounds[0].settings, SocksSettings(udp=True))


class FactoryTests(SynchronousTestCase):
    def build(self, settings: SocksSettings, policy: Policy = DEFAULT_POLICY) -> SocksServerFactory:
        inbound = InboundConfig("socks", [1080], listen="127.0.0.2", tag="socks-in",
                                settings=settings)
        clock = Clock()
        ctx = BuildContext(clock, TunnelService(Dispatcher([]), clock), policy)
        factory = build_inbound_factory(inbound, ctx)
        self.assertIsInstance(factory, SocksServerFactory)
        return factory

    def test_no_auth(self) -> None:
        factory = self.build(SocksSettings(udp=True, ip="10.0.0.1"))
        self.assertIsNone(factory.accounts)
        self.assertTrue(factory.udp)
        self.assertEqual(factory.udp_address, "10.0.0.1")
        self.assertEqual(factory.listen, "127.0.0.2")
        self.assertEqual(factory.tag, "socks-in")

    def test_password(self) -> None:
        factory = self.build(SocksSettings("password", {"ü": "p"}))
        self.assertEqual(factory.accounts, {"ü".encode(): b"p"})

    def test_policy_level(self) -> None:
        level = LevelPolicy(handshake=2)
        factory = self.build(SocksSettings(user_level=3), Policy({3: level}))
        self.assertEqual(factory.policy, level)

    def test_deprecated_timeout(self) -> None:
        factory = self.build(SocksSettings(timeout=30))
        self.assertEqual(factory.policy.conn_idle, 30)
