"""Shared pieces for the transport interop tests: run V2Ray, echo, hashed transfers, configs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.trial.unittest import TestCase

from tests.certs import shared_ca, shared_server_cert
from vtwist.config.node import Node
from vtwist.transport import stream

V2RAY = shutil.which("v2ray") or "/usr/bin/v2ray"
SERVER_NAME = "example.test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Echo(protocol.Protocol):
    """Echo server protocol."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class HashingClient(protocol.Protocol):
    """Sends ``size`` pseudo-random bytes, hashes what comes back, closes when all arrived."""

    def __init__(self, size: int, expect: int | None = None) -> None:
        self.size = size
        self.expect = size if expect is None else expect
        self.sent = hashlib.sha256()
        self.got = hashlib.sha256()
        self.received = 0
        self.done: defer.Deferred = defer.Deferred()
        self.reason: Any = None

    def connectionMade(self) -> None:
        block = os.urandom(1 << 16)
        left = self.size
        chunks = []
        i = 0
        while left > 0:
            piece = block[: min(left, len(block))]
            piece = bytes([i & 0xFF]) + piece[1:]
            chunks.append(piece)
            self.sent.update(piece)
            left -= len(piece)
            i += 1
        self._chunks = chunks
        self.transport.registerProducer(self, True)
        self._paused = False
        self._push()

    def _push(self) -> None:
        while self._chunks and not self._paused:
            self.transport.write(self._chunks.pop(0))
        if not self._chunks:
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._chunks:
            self._push()

    def stopProducing(self) -> None:
        self._chunks = []

    def dataReceived(self, data: bytes) -> None:
        self.got.update(data)
        self.received += len(data)
        if self.received >= self.expect:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        if not self.done.called:
            self.done.callback(self)


def stream_settings(obj: dict[str, Any], inbound: bool) -> stream.StreamSettings:
    """Parse a streamSettings dict (warnings raise, so tests see typos)."""
    def warn(msg: str) -> None:
        raise AssertionError(f"config warning: {msg}")

    return stream.parse_stream_settings(Node(obj, "streamSettings", warn), inbound)


class TransportFixture:
    """Files for TLS (CA + server certificate) and stream settings for each combination."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="vtwist-tr-")
        self.ca = shared_ca()
        self.cert = shared_server_cert(SERVER_NAME, "127.0.0.1")
        self.cert_file, self.key_file = self.cert.write(self.dir, "server")
        self.ca_file, _ = self.ca.write(self.dir, "ca")

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def tls_server(self) -> dict[str, Any]:
        return {"certificates": [{"certificateFile": self.cert_file, "keyFile": self.key_file}]}

    def tls_client(self, server_name: str = SERVER_NAME, **extra: Any) -> dict[str, Any]:
        return {"serverName": server_name,
                "certificates": [{"certificateFile": self.ca_file, "usage": "verify"}], **extra}

    def settings(self, kind: str, inbound: bool, path: str = "/tunnel") -> dict[str, Any]:
        """streamSettings for kind in tcp, tls, ws, wss, http, https."""
        out: dict[str, Any] = {"network": "tcp"}
        if kind in ("ws", "wss"):
            out = {"network": "ws", "wsSettings": {"path": path,
                                                   "headers": {"Host": SERVER_NAME}}}
            if inbound:
                out["wsSettings"].pop("headers")
        if kind in ("http", "https"):
            header: dict[str, Any] = {"type": "http", "request": {"path": ["/a", path]}}
            out = {"network": "tcp", "tcpSettings": {"header": header}}
        if kind in ("tls", "wss", "https"):
            out["security"] = "tls"
            out["tlsSettings"] = self.tls_server() if inbound else self.tls_client()
        return out


class V2RayProcess:
    """A running ``v2ray -config FILE``; ``stop()`` kills it."""

    def __init__(self, config: dict[str, Any], directory: str) -> None:
        if not os.path.exists(V2RAY):
            raise AssertionError(f"v2ray binary not found at {V2RAY}; install V2Ray 4.34")
        self.path = os.path.join(directory, f"v2ray-{id(self)}.json")
        with open(self.path, "w") as f:
            json.dump(config, f)
        self.log_path = self.path + ".log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([V2RAY, "-config", self.path], stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()


async def wait_port(port: int, proc: V2RayProcess | None = None, timeout: float = 10.0) -> None:
    """Wait until something accepts on 127.0.0.1:port."""
    for _ in range(int(timeout / 0.05)):
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"v2ray exited early:\n{proc.output()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"nothing listening on {port} after {timeout}s")


class TransportTestCase(TestCase):
    """A TestCase with the fixture, listening ports and processes cleaned up."""

    timeout = 60

    def setUp(self) -> None:
        self.fx = TransportFixture()
        self.addCleanup(self.fx.cleanup)

    def v2ray(self, config: dict[str, Any]) -> V2RayProcess:
        config.setdefault("log", {"loglevel": "warning"})
        proc = V2RayProcess(config, self.fx.dir)
        self.addCleanup(proc.stop)
        return proc

    async def listen(self, endpoint: Any, factory: Any) -> Any:
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return port

    async def echo_server(self) -> int:
        from twisted.internet.endpoints import TCP4ServerEndpoint

        port = await self.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 protocol.Factory.forProtocol(Echo))
        return port.getHost().port

    async def transfer(self, endpoint: Any, size: int) -> HashingClient:
        """Send ``size`` bytes through ``endpoint`` to an echo; check the sha256 both ways."""
        client = HashingClient(size)
        await endpoint.connect(protocol.Factory.forProtocol(lambda: client))
        await client.done
        self.assertEqual(client.received, size, f"echo incomplete: {client.reason}")
        self.assertEqual(client.got.hexdigest(), client.sent.hexdigest())
        return client
