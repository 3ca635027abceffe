"""Config parsing of the vmess inbound and outbound: values, defaults, error paths."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.proxy.datagram_connections import ConnectionPerDestination
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.inbound import build_inbound_factory
from vtwist.proxy.vmess.outbound import VMessOutbound, build_outbound
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.inbound import BuildContext
from vtwist.tunnel.service import TunnelService

ID = "b831381d-6324-4d53-ad4f-8cda48b30811"
ID2 = "01234567-89ab-cdef-0123-456789abcdef"


def inbound(settings: Any) -> dict[str, Any]:
    return {"inbounds": [{"port": 10086, "protocol": "vmess", "settings": settings}],
            "outbounds": [{"protocol": "freedom"}]}


def outbound(settings: Any) -> dict[str, Any]:
    return {"outbounds": [{"protocol": "vmess", "settings": settings}]}


class InboundConfig(SynchronousTestCase):
    def test_clients_and_defaults(self) -> None:
        c = parse_config(inbound({
            "clients": [{"id": ID, "alterId": 4, "level": 1, "email": "a@b"},
                        {"id": ID2.replace("-", "")}],
            "default": {"level": 2, "alterId": 8},
            "disableInsecureEncryption": True}))
        s = c.inbounds[0].settings
        self.assertEqual([a.uuid_text for a in s.clients], [ID, ID2])
        self.assertEqual((s.clients[0].alter_id, s.clients[0].level, s.clients[0].email),
                         (4, 1, "a@b"))
        self.assertEqual((s.clients[1].alter_id, s.clients[1].level), (8, 2))
        self.assertTrue(s.disable_insecure)
        self.assertTrue(s.legacy)
        self.assertEqual(c.warnings, [])

    def test_legacy_switch(self) -> None:
        s = parse_config(inbound({"clients": [{"id": ID}], "legacyHeader": False})
                         ).inbounds[0].settings
        self.assertFalse(s.legacy)
        c = parse_config(inbound({"clients": [{"id": ID}], "legacyHeader": False}))
        factory = build_inbound_factory(c.inbounds[0], BuildContext(
            Clock(), TunnelService(Dispatcher([]), Clock())))
        self.assertFalse(factory.state.users.legacy_enabled)

    def test_state_shared_between_ports(self) -> None:
        from vtwist.service import build_service

        data = inbound({"clients": [{"id": ID}]})
        data["inbounds"][0]["port"] = "10000-10001"
        service = build_service(parse_config(data), Clock())
        f1, f2 = (s.factory for s in service.inbound_services)
        self.assertIs(f1.state, f2.state)  # one replay filter for all ports

    def test_errors_name_the_path(self) -> None:
        cases = [
            ({"clients": [{"id": "nope"}]}, "inbounds[0].settings.clients[0].id"),
            ({"clients": [{"id": ID, "alterId": 70000}]},
             "inbounds[0].settings.clients[0].alterId"),
            ({"clients": [{"id": ID, "level": -1}]}, "inbounds[0].settings.clients[0].level"),
            ({"clients": {"id": ID}}, "inbounds[0].settings.clients"),
            ({"clients": [], "disableInsecureEncryption": "yes"},
             "inbounds[0].settings.disableInsecureEncryption"),
        ]
        for settings, path in cases:
            with self.assertRaises(ConfigError, msg=repr(settings)) as cm:
                parse_config(inbound(settings))
            self.assertEqual(cm.exception.path, path)

    def test_warnings(self) -> None:
        c = parse_config(inbound({"clients": [{"id": ID, "alterid": 4}, {"id": ID}],
                                  "detour": {"to": "x"}}))
        text = "\n".join(c.warnings)
        self.assertIn("inbounds[0].settings.clients[0].alterid: unknown field", text)
        self.assertIn("duplicate client id", text)
        self.assertNotIn("detour", text)
        self.assertEqual(c.inbounds[0].settings.detour, "x")


class OutboundConfig(SynchronousTestCase):
    def test_vnext(self) -> None:
        c = parse_config(outbound({"vnext": [
            {"address": "example.com", "port": 443,
             "users": [{"id": ID, "alterId": 0, "security": "chacha20-poly1305", "level": 1},
                       {"id": ID2, "security": "Auto"}]},
            {"address": "[::1]", "port": 10086, "users": [{"id": ID, "alterId": 4}]}]}))
        s = c.outbounds[0].settings
        self.assertEqual([(v.address, v.port) for v in s.servers],
                         [("example.com", 443), ("::1", 10086)])
        self.assertEqual(s.servers[0].users[0].security, "chacha20-poly1305")
        self.assertEqual(s.servers[0].users[1].security, "auto")
        self.assertEqual(s.servers[1].users[0].alter_id, 4)

    def test_errors_name_the_path(self) -> None:
        cases = [
            ({}, "outbounds[0].settings.vnext"),
            ({"vnext": []}, "outbounds[0].settings.vnext"),
            ({"vnext": [{"address": "a", "port": 0, "users": [{"id": ID}]}]},
             "outbounds[0].settings.vnext[0].port"),
            ({"vnext": [{"address": "a", "port": 1, "users": []}]},
             "outbounds[0].settings.vnext[0].users"),
            ({"vnext": [{"address": "a", "port": 1, "users": [{"id": "x"}]}]},
             "outbounds[0].settings.vnext[0].users[0].id"),
            ({"vnext": [{"port": 1, "users": [{"id": ID}]}]},
             "outbounds[0].settings.vnext[0].address"),
        ]
        for settings, path in cases:
            with self.assertRaises(ConfigError, msg=repr(settings)) as cm:
                parse_config(outbound(settings))
            self.assertEqual(cm.exception.path, path)

    def test_build_round_robin_and_endpoints(self) -> None:
        from vtwist.address import Destination

        c = parse_config(outbound({"vnext": [
            {"address": "127.0.0.1", "port": 1, "users": [{"id": ID}, {"id": ID2}]}]}))
        ob = build_outbound(c.outbounds[0], BuildContext(reactor=Clock()))
        self.assertIsInstance(ob, VMessOutbound)
        dest = Destination.tcp("example.com", 80)
        e1, e2, e3 = (ob.endpointFor(dest) for _ in range(3))
        self.assertIsInstance(e1, VMessClientEndpoint)
        self.assertEqual([e.account.uuid_text for e in (e1, e2, e3)], [ID, ID2, ID])
        self.assertEqual(e1.destination, dest)
        self.assertIsInstance(ob.packetSession(lambda d, s: None, lambda: None),
                              ConnectionPerDestination)
