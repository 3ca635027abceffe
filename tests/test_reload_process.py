"""Hot reload of a real process: ``python -m vtwist run --pidfile`` reloaded with
``vtwist reload`` and ``twistd vtwist`` with SIGHUP, while a transfer runs through it
(sha256): a changed config applies, a broken one changes nothing, the access log reopens
after a rename."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.trial.unittest import TestCase

from tests.netutil import accepts, free_port, wait_for_port_async, wait_until
from tests.test_reload import Paced, Probe, config, socks
from vtwist.address import Destination
from vtwist.proxy.socks.client import SocksClientEndpoint
from vtwist.testing.doubles import Echo

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}


class ProcessReloadTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.echo = port.getHost().port
        self.dir = tempfile.mkdtemp()
        self.config_path = os.path.join(self.dir, "config.json")
        self.pidfile = os.path.join(self.dir, "vtwist.pid")
        self.access = os.path.join(self.dir, "access.log")
        self.out_path = os.path.join(self.dir, "out.log")

    def write(self, data: Any) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        with open(self.config_path + ".tmp", "w") as f:
            f.write(text)
        os.replace(self.config_path + ".tmp", self.config_path)

    def output(self) -> str:
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        out = open(self.out_path, "wb")  # noqa: SIM115 - closed in the cleanup
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir,
                                env=ENV)

        def cleanup() -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            out.close()
        self.addCleanup(cleanup)
        return proc

    def alive(self, proc: subprocess.Popen[bytes]) -> Any:
        def check() -> None:
            if proc.poll() is not None:
                raise AssertionError(f"vtwist exited {proc.returncode}:\n{self.output()}")
        return check

    def via_socks(self, port: int, proto: Any) -> defer.Deferred[Any]:
        endpoint = SocksClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                       Destination.tcp("127.0.0.1", self.echo))
        return endpoint.connect(Factory.forProtocol(lambda: proto))

    async def echoes(self, port: int) -> bytes:
        probe = Probe()
        await self.via_socks(port, probe)
        return await probe.done

    def base(self, *inbounds: dict[str, Any]) -> dict[str, Any]:
        data = config(*inbounds)
        data["log"] = {"loglevel": "info", "access": self.access}
        return data

    async def test_run_reload_command(self) -> None:
        """``vtwist run --pidfile`` + ``vtwist reload``: an added inbound listens, the
        live transfer on the kept one completes intact, a broken config changes nothing,
        the renamed access log is replaced by a new file."""
        p, q = free_port(), free_port()
        self.write(self.base(socks(p)))
        proc = self.spawn([sys.executable, "-m", "vtwist", "run", "-c", self.config_path,
                           "--pidfile", self.pidfile])
        alive = self.alive(proc)
        await wait_for_port_async(p, 30, alive=alive)
        await wait_until(lambda: os.path.exists(self.pidfile), "no pid file", alive=alive)
        gate: defer.Deferred[None] = defer.Deferred()
        paced = Paced(gate=gate)
        await self.via_socks(p, paced)
        await paced.halfway

        os.rename(self.access, self.access + ".1")
        self.write(self.base(socks(p), socks(q, tag="second")))
        done = subprocess.run([sys.executable, "-m", "vtwist", "reload", "--pidfile",
                               self.pidfile], capture_output=True, text=True, timeout=30,
                              cwd=self.dir, env=ENV)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"sent SIGHUP to {proc.pid}", done.stdout)
        await wait_until(lambda: accepts(q), "the added inbound does not listen", 30, alive)
        self.assertEqual(await self.echoes(q), b"ping")

        self.write('{"inbounds": [ broken')
        os.rename(self.access, self.access + ".2")  # logrotate while the config is broken
        os.kill(proc.pid, signal.SIGHUP)
        await wait_until(lambda: "the running config stays" in self.output(),
                         lambda: f"no refusal line in:\n{self.output()}", 30, alive)
        self.assertEqual(await self.echoes(q), b"ping")  # the running config serves on

        gate.callback(None)
        await paced.done
        self.assertEqual((paced.received, paced.got.hexdigest()),
                         (paced.total, paced.sent.hexdigest()))
        with open(self.access + ".2") as f:  # the file the good reload opened
            self.assertIn(f"accepted tcp:127.0.0.1:{self.echo} [second >> direct]", f.read())
        with open(self.access) as f:  # reopened by the refused reload too
            self.assertIn(f"accepted tcp:127.0.0.1:{self.echo} [second >> direct]", f.read())
        with open(self.access + ".1") as f:
            self.assertIn("[socks >> direct]", f.read())
        out = self.output()
        self.assertEqual(out.count("the running config stays"), 1, out)
        self.assertNotIn("Traceback", out)

    async def test_twistd_sighup_moves_port(self) -> None:
        """``twistd vtwist`` on SIGHUP: an inbound moved to another port listens there, the
        old port stops accepting, and the transfer on the old one drains intact."""
        p, q = free_port(), free_port()
        self.write(self.base(socks(p)))
        proc = self.spawn([*TWISTD, "-n", "--pidfile", self.pidfile, "vtwist", "-c",
                           self.config_path])
        alive = self.alive(proc)
        await wait_for_port_async(p, 30, alive=alive)
        gate: defer.Deferred[None] = defer.Deferred()
        paced = Paced(gate=gate)
        await self.via_socks(p, paced)
        await paced.halfway
        self.write(self.base(socks(q)))
        os.kill(proc.pid, signal.SIGHUP)
        await wait_until(lambda: accepts(q) and not accepts(p),
                         lambda: f"not moved:\n{self.output()}", 30, alive)
        self.assertEqual(await self.echoes(q), b"ping")
        gate.callback(None)
        await paced.done
        self.assertEqual((paced.received, paced.got.hexdigest()),
                         (paced.total, paced.sent.hexdigest()))
        self.assertIn("reload: inbounds: 1 restart", self.output())
