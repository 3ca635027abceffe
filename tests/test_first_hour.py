"""A new user's first hour (issue 18): what the commands print, where they print it, and
the exit statuses, driven as a user would (subprocesses) or through ``cli.main``."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

from twisted.logger import LogLevel
from twisted.trial.unittest import SynchronousTestCase

from tests.netutil import free_port, wait_for_port
from vtwist import cli, logsetup
from vtwist.config.loader import parse_config
from vtwist.config.model import LogConfig
from vtwist.share.errors import LinkError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": ROOT}
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
VTWIST = [sys.executable, "-m", "vtwist"]


def write_json(test: SynchronousTestCase, data: Any) -> str:
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    test.addCleanup(os.unlink, path)
    return path


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=ENV, cwd=tempfile.gettempdir())


def run_until_listening(test: SynchronousTestCase, argv: list[str],
                        port: int) -> str:
    """Start ``argv``, wait until ``port`` accepts, stop it with SIGINT; its output."""
    out = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=ENV,
                            cwd=tempfile.gettempdir())

    def cleanup() -> None:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    test.addCleanup(cleanup)

    def alive() -> None:
        if proc.poll() is not None:
            out.seek(0)
            raise AssertionError(f"{argv} exited {proc.returncode}: {out.read().decode()}")
    wait_for_port(port, timeout=60, alive=alive)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    out.seek(0)
    return out.read().decode()


class PortInUseTests(SynchronousTestCase):
    def test_twistd_exits_non_zero(self) -> None:
        """twistd whose inbound cannot bind logs why and exits 1 (as ``vtwist run``)."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        path = write_json(self, {"inbounds": [{"protocol": "socks", "listen": "127.0.0.1",
                                               "port": busy.getsockname()[1]}],
                                 "outbounds": [{"protocol": "freedom"}]})
        done = run(*TWISTD, "-n", "--pidfile=", "vtwist", "-c", path)
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("cannot listen", done.stdout + done.stderr)
        self.assertIn("Address already in use", done.stdout + done.stderr)


class ListeningLineTests(SynchronousTestCase):
    """One ``listening:`` line per listener; Twisted's own start/stop lines only at debug."""

    def config(self, port: int, **log: str) -> str:
        return write_json(self, {"log": log, "inbounds": [{
            "tag": "socks-in", "protocol": "socks", "listen": "127.0.0.1", "port": port,
            "settings": {"udp": True}}], "outbounds": [{"protocol": "freedom"}]})

    def check(self, output: str, port: int) -> None:
        self.assertEqual(output.count("listening: "), 1, output)
        self.assertIn(f"listening: socks 127.0.0.1:{port}/tcp (+udp) [socks-in]", output)
        for noise in ("Starting factory", "Stopping factory", "starting on", "Port",
                      "object at 0x"):
            self.assertNotIn(noise, output)

    def test_run(self) -> None:
        port = free_port()
        self.check(run_until_listening(self, [*VTWIST, "run", "-c", self.config(
            port, loglevel="info")], port), port)

    def test_twistd(self) -> None:
        port = free_port()
        self.check(run_until_listening(self, [*TWISTD, "-n", "--pidfile=", "vtwist", "-c",
                                              self.config(port, loglevel="info")], port), port)

    def test_link(self) -> None:
        """``--link`` prints its listener too (the generated client config is at info)."""
        port = free_port()
        link = "ss://aes-128-gcm:pw@127.0.0.1:9#x"
        self.check(run_until_listening(self, [*VTWIST, "run", "--link", link, "--socks",
                                              f"127.0.0.1:{port}"], port), port)

    def test_listening_line_at_warning(self) -> None:
        """V2Ray's default level (warning) still shows the listening lines (run, twistd)."""
        port = free_port()
        self.check(run_until_listening(self, [*VTWIST, "run", "-c", self.config(
            port, loglevel="warning")], port), port)
        port = free_port()
        self.check(run_until_listening(self, [*TWISTD, "-n", "--pidfile=", "vtwist", "-c",
                                              self.config(port)], port), port)

    def test_loglevel_overrides(self) -> None:
        """``--loglevel`` (run and twistd) and ``-v`` override the config's level."""
        port = free_port()
        quiet = run_until_listening(self, [*VTWIST, "run", "--loglevel", "error", "-c",
                                           self.config(port, loglevel="info")], port)
        self.assertNotIn("listening:", quiet)
        port = free_port()
        loud = run_until_listening(self, [*TWISTD, "-n", "--pidfile=", "vtwist", "-v", "-c",
                                          self.config(port, loglevel="warning")], port)
        self.assertIn("listening:", loud)
        self.assertIn("starting on", loud)  # debug shows Twisted's own lines again
        port = free_port()
        twistd = run_until_listening(self, [*TWISTD, "-n", "--pidfile=", "vtwist",
                                            "--loglevel", "info", "-c",
                                            self.config(port, loglevel="error")], port)
        self.assertIn("listening:", twistd)

    def test_noise_filter(self) -> None:
        """The predicate itself: Twisted's chatter dropped below debug, ours kept."""
        events = [{"log_namespace": "twisted.internet.protocol.Factory",
                   "log_format": "Starting factory {factory!r}", "factory": object(),
                   "log_level": LogLevel.info},
                  {"log_namespace": "log_legacy", "log_format": "{log_text}",
                   "log_text": "(UDP Port 5353 Closed)", "log_level": LogLevel.info},
                  {"log_namespace": "log_legacy", "log_format": "{log_text}",
                   "log_text": "SocksFactory starting on 1080", "log_level": LogLevel.info},
                  {"log_namespace": "vtwist.proxy.vmess.client._VMessClientFactory",
                   "log_format": "Stopping factory {factory!r}", "factory": object(),
                   "log_level": LogLevel.info},
                  {"log_namespace": "vtwist.service", "log_format": "listening: x",
                   "log_level": LogLevel.info}]
        self.assertEqual([logsetup.is_twisted_noise(e) for e in events],
                         [True, True, True, True, False])
        out = io.StringIO()
        observers = logsetup.observers(LogConfig(loglevel="info", access="none"), out)
        for e in events:
            for o in observers:
                o({**e, "log_time": 0})
        self.assertEqual(out.getvalue().count("\n"), 1, out.getvalue())
        self.assertIn("listening: x", out.getvalue())


class CommandLineTests(SynchronousTestCase):
    def cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdout", out)  # argparse's --help
        try:
            status = cli.main(list(argv), out)
        except SystemExit as e:
            status = int(e.code or 0)
        return status, out.getvalue(), err.getvalue()

    def test_generated_configs_log_info(self) -> None:
        _, out, _ = self.cli("config", "server", "--port", "10086")
        self.assertEqual(json.loads(out)["log"]["loglevel"], "info")
        _, out, _ = self.cli("config", "from-link", "ss://aes-128-gcm:pw@127.0.0.1:9#x")
        self.assertEqual(json.loads(out)["log"]["loglevel"], "info")

    def test_server_config_stdout_is_json(self) -> None:
        """``vtwist config server > server.json`` saves valid JSON; the link is on stderr;
        ``link encode`` on that server config gives the same server's link."""
        status, out, err = self.cli("config", "server", "--port", "10086")
        self.assertEqual(status, 0)
        config = json.loads(out)
        [link] = [line[6:] for line in err.splitlines() if line.startswith("link: ")]
        path = write_json(self, config)
        status, out, err = self.cli("link", "encode", "--config", path)
        self.assertEqual(status, 0, err)
        from vtwist.share.schemes import parse_link

        made, original = parse_link(out.strip()), parse_link(link)
        self.assertEqual((made.add, made.port, made.id), (original.add, original.port,
                                                          original.id))
        self.assertIn("--address", err)  # it listens on 0.0.0.0: say where the link points
        self.assertIn("every interface", self.cli("config", "server")[2])
        self.assertNotIn("every interface", self.cli("config", "server", "--listen",
                                                     "127.0.0.1")[2])

    def test_help_shows_defaults(self) -> None:
        status, out, _ = self.cli("config", "server", "--help")
        self.assertEqual(status, 0)
        text = " ".join(out.split())
        for default in ("(default: 0.0.0.0)", "(default: 10086)", "(default: tcp)",
                        "(default: auto)", "(default: 127.0.0.1)"):
            self.assertIn(default, text)
        self.assertIn("public", text)

    def test_socks_without_link_is_a_usage_error(self) -> None:
        message = "--socks goes with --link or --subscription"
        status, _, err = self.cli("run", "--socks", "127.0.0.1:1081")
        self.assertEqual(status, 2)
        self.assertIn(message, err)
        done = run(*TWISTD, "-n", "--pidfile=", "vtwist", "--socks", "127.0.0.1:1081")
        self.assertNotEqual(done.returncode, 0)
        self.assertIn(message, done.stdout + done.stderr)

    def test_link_decode_prints_fields_and_outbound(self) -> None:
        status, out, _ = self.cli("link", "decode", "ss://aes-128-gcm:pw@127.0.0.1:9#x")
        self.assertEqual(status, 0)
        decoded = json.loads(out)
        self.assertEqual(decoded["fields"]["method"], "aes-128-gcm")
        self.assertEqual(decoded["outbound"]["protocol"], "shadowsocks")


class ConfigMessageTests(SynchronousTestCase):
    """One prefix, suggestions for typos, a warning when nothing listens, hints for cut-off
    input."""

    def check(self, data: Any) -> subprocess.CompletedProcess[str]:
        return run(*VTWIST, "check", write_json(self, data))

    def test_typo_suggestions_and_nothing_listens(self) -> None:
        done = self.check({"inbunds": [{"port": 1080, "protocol": "socks"}],
                           "outbounds": [{"protocol": "freedom", "tga": "x"}]})
        self.assertEqual(done.returncode, 0)
        self.assertIn('inbunds: unknown field, ignored (did you mean "inbounds"?)',
                      done.stderr)
        self.assertIn('outbounds[0].tga: unknown field, ignored (did you mean "tag"?)',
                      done.stderr)
        self.assertIn("nothing to listen on", done.stderr)
        self.assertIn("warnings (above)", done.stdout)

    def test_legacy_keys_are_not_typos(self) -> None:
        warnings: list[str] = []
        parse_config({"port": 1080, "inbound": {"protocol": "socks"},
                      "outbound": {"protocol": "freedom"}, "inboundDetour": [],
                      "outboundDetour": []}, warnings.append)
        self.assertFalse([w for w in warnings if "did you mean" in w], warnings)

    def test_one_prefix(self) -> None:
        """Every config error, from check, run and twistd, begins ``vtwist: config error:``
        and is one line; a file cut short says it looks truncated."""
        truncated = write_json(self, '{"inbounds": [{"port": 1080, "protocol": "socks"')
        bad = write_json(self, {"outbounds": [{"protocol": "vmess", "settings": {"vnext": [
            {"address": "a", "port": "abc", "users": [{"id": "x"}]}]}}]})
        for path, expected in ((truncated, "looks truncated"),
                               (bad, "vnext[0].port: expected an integer")):
            for argv in ([*VTWIST, "check", path], [*VTWIST, "run", "-c", path],
                         [*TWISTD, "-n", "--pidfile=", "vtwist", "-c", path]):
                done = run(*argv)
                self.assertEqual(done.returncode, 1, argv)
                [line] = [x for x in done.stderr.splitlines() if "config error" in x]
                self.assertTrue(line.startswith("vtwist: config error: "), line)
                self.assertIn(expected, line)
                self.assertNotIn("at at", line)
                self.assertNotIn("Traceback", done.stderr)

    def test_truncated_link(self) -> None:
        from vtwist.share.schemes import parse_link

        link = cli_link()
        for cut in (link[:-7], link[:-6], link[:100]):
            e = self.assertRaises(LinkError, parse_link, cut)
            self.assertIn("looks truncated", str(e))


def cli_link() -> str:
    """A vmess link as ``config server`` prints it."""
    out, err = io.StringIO(), io.StringIO()
    saved, sys.stderr = sys.stderr, err
    try:
        cli.main(["config", "server", "--port", "10086", "--id",
                  "b831381d-6324-4d53-ad4f-8cda48b30811"], out)
    finally:
        sys.stderr = saved
    return next(line[6:] for line in err.getvalue().splitlines() if line.startswith("link: "))
