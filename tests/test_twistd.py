"""The twistd plugin and the service tree, driven as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.netutil import free_port, wait_for_port
from tests.services import serve_web, start_service
from vtwist.config.loader import parse_config
from vtwist.service import build_service

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class TwistdTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.web_port = serve_web(self, {b"hello": b"hello via twistd\n"})

    @defer.inlineCallbacks
    def test_run_curl_and_stop(self) -> Any:
        """``twistd -n vtwist -c FILE`` serves SOCKS5, logs access lines, stops on SIGTERM."""
        socks_port = free_port()
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"log": {"loglevel": "info"},
                       "inbounds": [{"tag": "socks-in", "protocol": "socks",
                                     "listen": "127.0.0.1", "port": socks_port}],
                       "outbounds": [{"tag": "direct", "protocol": "freedom"}]}, f)
        self.addCleanup(os.unlink, path)
        out = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            [*TWISTD, "-n", "--pidfile=", "vtwist", "-c", path],
            stdout=out, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())

        def cleanup() -> None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.addCleanup(cleanup)
        wait_for_port(socks_port)
        body, err, code = yield getProcessOutputAndValue(
            "curl", ["-sS", "--max-time", "10", "--socks5-hostname",
                     f"127.0.0.1:{socks_port}", f"http://localhost:{self.web_port}/hello"],
            env=dict(os.environ))
        self.assertEqual((body, code), (b"hello via twistd\n", 0), err)
        proc.send_signal(signal.SIGTERM)
        # twistd shuts down cleanly, then re-raises SIGTERM to report how it ended.
        self.assertIn(proc.wait(timeout=20), (0, -signal.SIGTERM))
        out.seek(0)
        log = out.read().decode()
        self.assertIn(f"accepted tcp:localhost:{self.web_port} [socks-in >> direct]", log)
        self.assertIn("Server Shut Down.", log)
        self.assertNotIn("Traceback", log)


class OptionsTests(SynchronousTestCase):
    """``twistd vtwist`` options refuse combinations that mean nothing (as ``vtwist run``)."""

    def test_conflicts(self) -> None:
        from twisted.python.usage import UsageError

        from vtwist.tap import Options

        for argv, message in (
                (["-c", "a.json", "--link", "vmess://x"],
                 "use only one of --config, --link, --subscription"),
                (["--link", "vmess://x", "--pick", "name"], "--pick goes with --subscription")):
            with self.assertRaises(UsageError) as cm:
                Options().parseOptions(argv)
            self.assertEqual(str(cm.exception), message)
        options = Options()
        options.parseOptions(["--subscription", "subs.txt", "--pick", "name"])
        self.assertEqual((options["subscription"], options["pick"]), ("subs.txt", "name"))


class PortInUseTests(SynchronousTestCase):
    """A process whose inbound cannot bind stops (instead of running with nothing to serve)."""

    def run_busy(self, *command: str, **extra: Any) -> subprocess.CompletedProcess[str]:
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump({"inbounds": [{"protocol": "socks", "listen": "127.0.0.1",
                                     "port": busy.getsockname()[1]}],
                       "outbounds": [{"protocol": "freedom"}], **extra}, f)
        self.addCleanup(os.unlink, path)
        return subprocess.run([*command, path], capture_output=True, text=True, timeout=30,
                              cwd=tempfile.gettempdir())

    def test_unopenable_log_file(self) -> None:
        """A log file that cannot be opened: one error line and status 1, no traceback."""
        bad = {"log": {"access": "/nonexistent-vtwist/access.log"}}
        for command in ((sys.executable, "-m", "vtwist", "run", "-c"),
                        (*TWISTD, "-n", "--pidfile=", "vtwist", "-c")):
            done = self.run_busy(*command, **bad)
            self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
            self.assertIn("config error: log.access: cannot open /nonexistent-vtwist/access.log",
                          done.stderr)
            self.assertNotIn("Traceback", done.stdout + done.stderr)

    def test_python_m_vtwist_run_exits_1(self) -> None:
        done = self.run_busy(sys.executable, "-m", "vtwist", "run", "-c")
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        self.assertIn("cannot listen", done.stdout + done.stderr)

    def test_twistd_stops(self) -> None:
        """twistd has no exit status of its own for this; it must at least stop."""
        done = self.run_busy(*TWISTD, "-n", "--pidfile=", "vtwist", "-c",
                             log={"loglevel": "info"})  # twistd's own lines are info
        self.assertIn("cannot listen", done.stdout + done.stderr)
        self.assertIn("Server Shut Down.", done.stdout + done.stderr)


class _Hold(Protocol):
    lost: defer.Deferred[None]

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class ServiceStopTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def test_stop_closes_listeners_and_connections(self) -> Any:
        """Stopping the MultiService stops listening and closes open relays cleanly."""
        target = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(target.stopListening)
        socks_port = free_port()
        service = yield start_service({
            "inbounds": [{"tag": "in", "protocol": "socks", "listen": "127.0.0.1",
                          "port": socks_port}],
            "outbounds": [{"protocol": "freedom"}]})

        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        client = _Hold()
        client.lost = defer.Deferred()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", socks_port), client)
        port = target.getHost().port
        client.transport.write(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01"
                               + port.to_bytes(2, "big"))
        yield service.stopService()
        yield client.lost
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", socks_port), timeout=1).close()

    @defer.inlineCallbacks
    def test_port_in_use_fails_clearly(self) -> Any:
        """An inbound that cannot bind makes whenListening fail and marks the service."""
        busy = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        self.addCleanup(busy.stopListening)
        config = {"inbounds": [{"protocol": "socks", "listen": "127.0.0.1",
                                "port": busy.getHost().port}],
                  "outbounds": [{"protocol": "freedom"}]}
        service = build_service(parse_config(config), reactor)
        service.startService()
        self.addCleanup(service.stopService)
        with self.assertRaises(CannotListenError):
            yield service.whenListening()
        self.assertTrue(service.failed)
