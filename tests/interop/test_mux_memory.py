"""Memory with a stalled reader on one Mux.Cool session while others run, measured on the
processes: ``python -m vtwist run`` as client (mux on) and as server, in child processes.

One session uploads into a target that does not read; seven others echo at the same time
over the same mux connection. Mux.Cool has no per-session window, so once the stalled
session holds its bound (256 KiB past its pause) the whole connection waits (head-of-line
blocking, as V2Ray): the test pushes far more than that into the stalled session and checks
that neither process grows by more than a bounded amount (the bytes wait in the kernel's
socket buffers and the sender's, not in vtwist). Then the target reads again, and every
byte arrives: the stalled upload and all seven echoes, sha256-checked.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from tests.interop.test_mux_interop import STREAMS, server_inbound, socks_inbound, vmess_outbound
from tests.interop.v2ray_runner import EchoServer, Subprocess
from tests.interop.vmess_harness import SocksStream
from tests.netutil import free_port, wait_for_port_async

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: pushed into the stalled session while it is stalled
STALLED = 64 * 1024 * 1024
#: each of the other sessions echoes this much
EACH = 4 * 1024 * 1024
#: what a process may grow by over its idle size while the session is stalled
GROWTH_LIMIT = 24 * 1024 * 1024
logger = Logger(namespace="tests.mux_memory")


def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class _SlowTarget(protocol.Protocol):
    """Reads nothing until ``release()``; then hashes what arrives."""

    def __init__(self, factory: _SlowTargets) -> None:
        self.factory = factory
        self.sha = hashlib.sha256()
        self.received = 0

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.factory.made.callback(self)

    def release(self) -> None:
        self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self.sha.update(data)
        self.received += len(data)
        if self.received >= STALLED and not self.factory.done.called:
            self.factory.done.callback(self.sha.hexdigest())


class _SlowTargets(protocol.Factory):
    def __init__(self) -> None:
        self.made: defer.Deferred[_SlowTarget] = defer.Deferred()
        self.done: defer.Deferred[str] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> _SlowTarget:
        return _SlowTarget(self)


class _Pusher:
    """Writes STALLED bytes into a SOCKS stream as fast as it drains (a push producer)."""

    def __init__(self, stream: SocksStream) -> None:
        self.stream = stream
        self.block = os.urandom(1 << 16)
        self.sent = 0
        self.sha = hashlib.sha256()
        self.paused = False
        stream.transport.registerProducer(self, True)
        self.resumeProducing()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.sent < STALLED:
            piece = self.block[: min(len(self.block), STALLED - self.sent)]
            self.sha.update(piece)
            self.sent += len(piece)
            self.stream.transport.write(piece)
        if self.sent >= STALLED:
            self.stream.transport.unregisterProducer()

    def stopProducing(self) -> None:
        self.sent = STALLED


class StalledSessionMemory(TestCase):
    timeout = 240

    def spawn(self, name: str, config: dict[str, Any]) -> Subprocess:
        path = os.path.join(self.dir, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        log = open(os.path.join(self.dir, f"{name}.log"), "w+b")  # noqa: SIM115
        self.addCleanup(log.close)
        child = Subprocess([sys.executable, "-m", "vtwist", "run", "--config", path],
                           stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.addCleanup(child.stop)
        return child

    async def test_stalled_reader_bounded(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="vtwist-muxmem-")
        echo = EchoServer()
        self.addCleanup(echo.stop)
        targets = _SlowTargets()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(targets)
        self.addCleanup(port.stopListening)
        slow_port = port.getHost().port
        server_port, socks_port = free_port(), free_port()
        log = {"loglevel": "warning"}
        server = self.spawn("server", {"log": log, "inbounds": [server_inbound(server_port)],
                                       "outbounds": [{"protocol": "freedom"}]})
        client = self.spawn("client", {"log": log, "inbounds": [socks_inbound(socks_port)],
                                       "outbounds": [vmess_outbound(server_port)]})
        await wait_for_port_async(server_port, 30, alive=server.check_alive)
        await wait_for_port_async(socks_port, 30, alive=client.check_alive)
        pids = {"client": client.proc.pid, "server": server.proc.pid}

        async def connect(target: int) -> SocksStream:
            s = SocksStream("127.0.0.1", target)
            await TCP4ClientEndpoint(reactor, "127.0.0.1", socks_port).connect(
                protocol.Factory.forProtocol(lambda: s))
            await s.ready.addTimeout(20, reactor)
            return s

        warm = await connect(echo.port)  # the carrier is up, the code paths are loaded
        warm.transport.write(b"x" * 65536)
        await warm.expect(65536).addTimeout(20, reactor)
        idle = {name: rss(pid) for name, pid in pids.items()}

        stalled = await connect(slow_port)
        target = await targets.made.addTimeout(20, reactor)
        pusher = _Pusher(stalled)
        others = [await connect(echo.port) for _ in range(STREAMS - 1)]
        block = os.urandom(EACH)
        want = hashlib.sha256(block).hexdigest()
        echoes = [s.expect(EACH).addTimeout(180, reactor) for s in others]
        for s in others:
            s.transport.write(block)
        peak = dict(idle)
        deadline = time.monotonic() + 8  # the stall settles; sample all the while
        while time.monotonic() < deadline:
            for name, pid in pids.items():
                peak[name] = max(peak[name], rss(pid))
            await task.deferLater(reactor, 0.1, lambda: None)
        logger.info("stalled session: {sent} MB pushed; growth client {c:.1f} MB, server {s:.1f} MB",
                 sent=pusher.sent >> 20, c=(peak["client"] - idle["client"]) / 2**20,
                 s=(peak["server"] - idle["server"]) / 2**20)
        self.assertLess(pusher.sent, STALLED, "the stalled session took everything")
        for name in pids:
            self.assertLess(peak[name] - idle[name], GROWTH_LIMIT,
                            f"{name} grew from {idle[name] >> 20} MB to {peak[name] >> 20} MB "
                            f"with {pusher.sent >> 20} MB pushed into a stalled session")
        target.release()
        self.assertEqual(await targets.done.addTimeout(180, reactor), pusher.sha.hexdigest())
        self.assertEqual(await defer.gatherResults(echoes), [want] * (STREAMS - 1))
        for s in [warm, stalled, *others]:
            s.transport.loseConnection()
        await defer.gatherResults([s.closed for s in [warm, stalled, *others]])
        target.transport.loseConnection()
