"""An outbound's ``mux`` block as V2Ray 4.34 reads it."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config


def config(mux: Any, protocol: str = "vmess") -> dict[str, Any]:
    settings = ({"vnext": [{"address": "127.0.0.1", "port": 1,
                            "users": [{"id": "b831381d-6324-4d53-ad4f-8cda48b30811"}]}]}
                if protocol == "vmess" else {})
    return {"outbounds": [{"protocol": protocol, "settings": settings, "mux": mux}]}


class MuxConfigTests(SynchronousTestCase):
    def test_default_concurrency(self) -> None:
        out = parse_config(config({"enabled": True})).outbounds[0]
        self.assertEqual(out.mux.concurrency, 8)

    def test_concurrency(self) -> None:
        for given, want in ((0, 8), (1, 1), (128, 128), (1024, 1024)):
            out = parse_config(config({"enabled": True, "concurrency": given})).outbounds[0]
            self.assertEqual(out.mux.concurrency, want)

    def test_off(self) -> None:
        for mux in ({"enabled": False}, {"enabled": True, "concurrency": -1}, {}):
            self.assertIsNone(parse_config(config(mux)).outbounds[0].mux)

    def test_over_1024(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse_config(config({"enabled": True, "concurrency": 1025}))
        self.assertIn("1024", str(cm.exception))

    def test_freedom_accepts_and_ignores(self) -> None:
        parsed = parse_config(config({"enabled": True}, "freedom"))
        self.assertEqual(parsed.warnings, [])
