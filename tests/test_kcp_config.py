"""kcpSettings JSON parsing: V2Ray 4.34 defaults, ranges, seed presence, header types."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.transport.kcp.config import KCPConfig, parse_kcp_settings


def parse(value: object) -> KCPConfig:
    warnings: list[str] = []
    cfg = parse_kcp_settings(Node(value, "streamSettings.kcpSettings", warnings.append))
    if warnings:
        raise AssertionError(warnings)
    return cfg


class KCPSettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        for value in ({}, None):
            cfg = parse(value)
            self.assertEqual(cfg, KCPConfig())
            self.assertEqual((cfg.mtu, cfg.tti, cfg.uplink_capacity, cfg.downlink_capacity),
                             (1350, 50, 5, 20))
            self.assertEqual((cfg.congestion, cfg.header_type, cfg.seed), (False, "none", None))
            self.assertEqual(cfg.write_buffer_bytes, 2 * 1024 * 1024)
            self.assertEqual(cfg.sending_in_flight, 194)
            self.assertEqual(cfg.receiving_window, 776)
            self.assertEqual(cfg.receive_window, 1553, "what readBufferSize (2 MiB) holds")

    def test_receive_window_is_the_larger_of_capacity_and_read_buffer(self) -> None:
        self.assertEqual(parse({"readBufferSize": 1}).receive_window, 776)
        self.assertEqual(parse({"readBufferSize": 0}).receive_window, 776)
        self.assertEqual(parse({"readBufferSize": 4}).receive_window, 4 * 1024 * 1024 // 1350)
        self.assertEqual(parse({"downlinkCapacity": 100}).receive_window, 3883)

    def test_all_fields(self) -> None:
        cfg = parse({"mtu": 1400, "tti": 20, "uplinkCapacity": 12, "downlinkCapacity": 100,
                     "congestion": True, "readBufferSize": 0, "writeBufferSize": 4,
                     "header": {"type": "Wechat-Video", "request": "ignored"}, "seed": "x"})
        self.assertEqual(cfg, KCPConfig(mtu=1400, tti=20, uplink_capacity=12,
                                        downlink_capacity=100, congestion=True,
                                        read_buffer_bytes=512 * 1024,
                                        write_buffer_bytes=4 * 1024 * 1024,
                                        header_type="wechat-video", seed="x"))

    def test_seed_presence(self) -> None:
        self.assertEqual(parse({"seed": ""}).seed, "")
        self.assertIsNone(parse({"seed": None}).seed)
        self.assertIsNone(parse({}).seed)
        self.assertEqual(parse({"header": None}).header_type, "none")
        self.assertEqual(parse({"seed": ""}).mss, 1350 - 16 - 18)

    def test_ranges_and_types(self) -> None:
        cases = {
            "mtu": ({"mtu": 575}, {"mtu": 1461}),
            "tti": ({"tti": 9}, {"tti": 101}),
            "uplinkCapacity": ({"uplinkCapacity": -1},),
            "congestion": ({"congestion": "yes"},),
            "header.type": ({"header": {"type": "tls"}}, {"header": {}}),
            "seed": ({"seed": 5},),
        }
        for field, bad_values in cases.items():
            for bad in bad_values:
                with self.assertRaises(ConfigError) as caught:
                    parse(bad)
                self.assertEqual(caught.exception.path, f"streamSettings.kcpSettings.{field}",
                                 bad)
        for ok in ({"mtu": 576}, {"mtu": 1460}, {"tti": 10}, {"tti": 100},
                   {"uplinkCapacity": 0}):
            parse(ok)

    def test_unknown_key_warns(self) -> None:
        warnings: list[str] = []
        parse_kcp_settings(Node({"mtuu": 1}, "k", warnings.append))
        self.assertEqual(len(warnings), 1)
        self.assertIn("k.mtuu", warnings[0])
