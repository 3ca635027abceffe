"""HTTP/2 and gRPC flow control, measured: 200 MB into a stalled reader must not grow either
process.

Two vtwist processes: the client (SOCKS inbound -> VMess outbound over h2 or grpc) and the
server (VMess inbound -> freedom). A fast writer pushes 200 MB; the reader reads nothing for a
few seconds, then drains. The stalled side's relay pauses its HTTP/2 stream, which then
acknowledges nothing, so the peer's stream window runs out; the peer's stream buffer passes its
mark and pauses the side reading from the writer. Without that, a process would buffer what
the writer pushed during the stall. VmRSS of both processes is sampled from /proc while the
transfer runs. Tested in both directions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import shared_server_cert

from .netutil import free_port
from .test_socks_backpressure import rss
from .test_socks_e2e import socks_connect

TOTAL = 200 * 1024 * 1024
CHUNK = 1 << 20
STALL = 4.0
ALLOWED_GROWTH = 6 * 1024 * 1024
DEADLINE = 150.0
UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stalled_read(sock: socket.socket, stall: float, deadline: float) -> tuple[int, str]:
    """Read nothing for ``stall`` seconds, then everything until EOF; (count, sha256)."""
    time.sleep(stall)
    digest = hashlib.sha256()
    total = 0
    sock.settimeout(20)
    while time.monotonic() < deadline:
        chunk = sock.recv(256 * 1024)
        if not chunk:
            return total, digest.hexdigest()
        digest.update(chunk)
        total += len(chunk)
    raise TimeoutError(f"reader gave up after {total} bytes")


def fast_write(sock: socket.socket, total: int) -> str:
    """Write ``total`` bytes as fast as the socket takes them, half-close; their sha256."""
    block = os.urandom(CHUNK)
    digest = hashlib.sha256()
    sent = 0
    sock.settimeout(60)
    while sent < total:
        piece = sent.to_bytes(8, "big") + block[8:min(CHUNK, total - sent)]
        sock.sendall(piece)
        digest.update(piece)
        sent += len(piece)
    sock.shutdown(socket.SHUT_WR)
    return digest.hexdigest()


class H2BackpressureTests(SynchronousTestCase):
    """200 MB over VMess over HTTP/2 (h2c) into a reader that stalls first."""

    stream: dict = {"network": "h2", "httpSettings": {"path": "/bp"}}
    label = "h2"
    tls = False

    def streams(self) -> tuple[dict, dict]:
        """The server's and the client's streamSettings."""
        if not self.tls:
            return self.stream, self.stream
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        cert_file, key_file = shared_server_cert("localhost").write(directory, "s")
        server = {**self.stream, "security": "tls", "tlsSettings": {"certificates": [
            {"certificateFile": cert_file, "keyFile": key_file}]}}
        client = {**self.stream, "security": "tls",
                  "tlsSettings": {"serverName": "localhost", "allowInsecure": True}}
        return server, client

    def _start(self, config: dict, probe_port: int | None) -> subprocess.Popen:
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(config, f)
        self.addCleanup(os.unlink, path)
        proc = subprocess.Popen([sys.executable, "-m", "vtwist", "run", "-c", path],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)

        def stop() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            proc.stderr.close()

        self.addCleanup(stop)
        return proc

    def setUp(self) -> None:
        self.socks_port = free_port()
        server_port = free_port()
        server_stream, client_stream = self.streams()
        self.server = self._start({
            "log": {"loglevel": "warning", "access": os.devnull},
            "inbounds": [{"listen": "127.0.0.1", "port": server_port, "protocol": "vmess",
                          "settings": {"clients": [{"id": UUID, "alterId": 0}]},
                          "streamSettings": server_stream}],
            "outbounds": [{"protocol": "freedom"}]}, None)
        self.client = self._start({
            "log": {"loglevel": "warning", "access": os.devnull},
            "inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "port": self.socks_port,
                          "settings": {"auth": "noauth"}}],
            "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": server_port,
                "users": [{"id": UUID, "alterId": 0, "security": "aes-128-gcm"}]}]},
                "streamSettings": client_stream}]}, self.socks_port)
        deadline = time.monotonic() + 20
        waiting = [self.socks_port, server_port]  # both processes listen on TCP
        while waiting:
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
                waiting.pop(0)
            except OSError:
                for proc in (self.client, self.server):
                    if proc.poll() is not None:
                        self.fail(f"vtwist did not start: {proc.stderr.read()!r}")
                if time.monotonic() > deadline:
                    self.fail("vtwist did not start")
                time.sleep(0.05)
        self.target = socket.socket()
        self.target.bind(("127.0.0.1", 0))
        self.target.listen(4)
        self.target.settimeout(30)
        self.addCleanup(self.target.close)

    def transfer(self, total: int, upload: bool, stall: float) -> dict[str, float]:
        """Move ``total`` bytes one way; the reading side stalls first. Peak RSS growth."""
        port = self.target.getsockname()[1]
        deadline = time.monotonic() + DEADLINE
        result: dict[str, object] = {}

        def target_side() -> None:
            try:
                conn, _ = self.target.accept()
                with conn:
                    if upload:
                        result["received"] = stalled_read(conn, stall, deadline)
                    else:
                        result["sent"] = fast_write(conn, total)
                        conn.settimeout(30)
                        conn.recv(1)
            except Exception as e:  # noqa: BLE001 - reported by the test
                result["error"] = e

        procs = (self.client, self.server)
        thread = threading.Thread(target=target_side, daemon=True)
        thread.start()
        client = socks_connect(self.socks_port, "127.0.0.1", port)
        base = [rss(p.pid) for p in procs]
        peak = list(base)
        done = threading.Event()

        def client_side() -> None:
            try:
                with client:
                    if upload:
                        result["sent"] = fast_write(client, total)
                        client.settimeout(30)
                        client.recv(1)
                    else:
                        result["received"] = stalled_read(client, stall, deadline)
                        client.shutdown(socket.SHUT_WR)
            except Exception as e:  # noqa: BLE001
                result["error"] = e
            finally:
                done.set()

        worker = threading.Thread(target=client_side, daemon=True)
        worker.start()
        while not done.wait(0.05):
            peak = [max(m, rss(p.pid)) for m, p in zip(peak, procs, strict=True)]
            self.assertLess(time.monotonic(), deadline, "transfer took too long")
        thread.join(30)
        worker.join(30)
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        self.assertEqual(result["received"], (total, result["sent"]))
        return {"client": peak[0] - base[0], "server": peak[1] - base[1],
                "client_base": base[0], "server_base": base[1]}

    def check(self, upload: bool) -> None:
        self.transfer(8 * CHUNK, upload, stall=0.5)  # warm up code paths and allocator
        growth = self.transfer(TOTAL, upload, STALL)
        direction = "upload" if upload else "download"
        print(f"\n{self.label} {direction}: 200 MB after a {STALL:.0f} s stall; RSS growth client "
              f"+{growth['client'] / 2**20:.2f} MB (of {growth['client_base'] / 2**20:.1f}), "
              f"server +{growth['server'] / 2**20:.2f} MB "
              f"(of {growth['server_base'] / 2**20:.1f})")
        for side in ("client", "server"):
            self.assertLess(growth[side], ALLOWED_GROWTH,
                            f"{side} RSS grew by {growth[side] / 2**20:.1f} MB ({direction})")

    def test_upload_into_stalled_target(self) -> None:
        self.check(upload=True)

    def test_download_into_stalled_client(self) -> None:
        self.check(upload=False)


class GunBackpressureTests(H2BackpressureTests):
    """The same over gRPC gun (h2c)."""

    stream = {"network": "grpc", "grpcSettings": {"serviceName": "bp"}}
    label = "grpc"


class MultiBackpressureTests(H2BackpressureTests):
    """The same over gRPC multi mode (h2c)."""

    stream = {"network": "grpc", "grpcSettings": {"serviceName": "bp", "multiMode": True}}
    label = "grpc multi"


class GunTLSBackpressureTests(H2BackpressureTests):
    """The same over gRPC gun with TLS (the TLS layer's producer pauses reach HTTP/2)."""

    stream = {"network": "grpc", "grpcSettings": {"serviceName": "bp"}}
    label = "grpc+tls"
    tls = True
