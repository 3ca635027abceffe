"""``--mux [N]`` on ``vtwist config from-link`` and ``vtwist run --link/--subscription``."""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from vtwist import cli, genconfig
from vtwist.config.loader import parse_config
from vtwist.share.errors import LinkError

UID = "b831381d-6324-4d53-ad4f-8cda48b30811"
VLESS = f"vless://{UID}@127.0.0.1:443?encryption=none&security=none&type=tcp#v"
TROJAN = "trojan://secret@127.0.0.1:443?security=tls&sni=example.com#t"


class FromLinkTests(SynchronousTestCase):
    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdout", out)
        return cli.main(list(argv), out), out.getvalue(), err.getvalue()

    def test_mux_default_and_n(self) -> None:
        for argv, want in ((("--mux",), 8), (("--mux", "32"), 32)):
            status, out, _ = self.run_cli("config", "from-link", VLESS, *argv)
            self.assertEqual(status, 0)
            config = json.loads(out)
            self.assertEqual(config["outbounds"][0]["mux"],
                             {"enabled": True, "concurrency": want})
            self.assertEqual(parse_config(config).outbounds[0].mux.concurrency, want)

    def test_no_mux_by_default(self) -> None:
        status, out, _ = self.run_cli("config", "from-link", VLESS)
        self.assertEqual(status, 0)
        self.assertNotIn("mux", json.loads(out)["outbounds"][0])

    def test_bad_values(self) -> None:
        status, _, err = self.run_cli("config", "from-link", VLESS, "--mux", "2000")
        self.assertNotEqual(status, 0)
        self.assertIn("1-1024", err)
        status, _, err = self.run_cli("config", "from-link", TROJAN, "--mux")
        self.assertNotEqual(status, 0)
        self.assertIn("vmess or vless", err)

    def test_zero_is_a_usage_error(self) -> None:
        self.patch(sys, "stderr", io.StringIO())
        with self.assertRaises(SystemExit):
            cli.build_parser().parse_args(["config", "from-link", VLESS, "--mux", "0"])


class RunTests(SynchronousTestCase):
    def args(self, *argv: str) -> argparse.Namespace:
        return cli.build_parser().parse_args(["run", *argv])

    def test_link_with_mux(self) -> None:
        config = cli._config_for_run(self.args("--link", VLESS, "--mux", "4"))
        self.assertEqual(config["outbounds"][0]["mux"]["concurrency"], 4)

    def test_subscription_with_mux(self) -> None:
        config = genconfig.client_config_from_subscription(VLESS + "\n", mux=16)
        self.assertEqual(config["outbounds"][0]["mux"]["concurrency"], 16)

    def test_mux_needs_a_link(self) -> None:
        with self.assertRaises(cli.CLIError):
            cli._config_for_run(self.args("--mux"))

    def test_with_mux(self) -> None:
        self.assertEqual(genconfig.with_mux({"protocol": "vmess"}, None), {"protocol": "vmess"})
        self.assertRaises(LinkError, genconfig.with_mux, {"protocol": "shadowsocks"}, 8)


class TwistdTests(SynchronousTestCase):
    def options(self, *argv: str) -> Any:
        from vtwist import tap

        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_link_with_mux(self) -> None:
        from vtwist import tap

        config = tap.config_from_options(self.options("--link", VLESS, "--mux", "16"))
        self.assertEqual(config["outbounds"][0]["mux"], {"enabled": True, "concurrency": 16})

    def test_usage_errors(self) -> None:
        from twisted.python import usage

        for argv in (("--mux", "8"), ("--link", VLESS, "--mux", "0"),
                     ("--link", VLESS, "--mux", "x")):
            self.assertRaises(usage.UsageError, self.options, *argv)
