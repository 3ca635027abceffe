"""The harness of the backpressure tests: vtwist as subprocesses, /proc measurements, a
transfer through a SOCKS inbound with a slow or stalled reader on one side, and the
two-process (client vtwist -> server vtwist) stalled-reader test for a transport."""

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
from collections.abc import Callable
from typing import Any

from tests.certs import shared_server_cert

from .netutil import free_port
from .test_socks_e2e import socks_connect

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 1 << 20
UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"


# -- /proc -----------------------------------------------------------------------------------
def rss(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def pipes(pid: int) -> int:
    """How many pipe descriptors ``pid`` holds."""
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("pipe:")
        except OSError:
            pass
    return count


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- processes -------------------------------------------------------------------------------
def start_vtwist(case: Any, config: dict, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python -m vtwist run -c CONFIG`` as a subprocess, killed at ``case``'s cleanup."""
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    case.addCleanup(os.unlink, path)
    proc = subprocess.Popen([sys.executable, "-m", "vtwist", "run", "-c", path],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
                            env=env)

    def stop() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stderr.close()

    case.addCleanup(stop)
    return proc


def wait_listening(case: Any, ports: list[int], procs: list[subprocess.Popen],
                   timeout: float) -> None:
    """Wait until each TCP port in ``ports`` accepts; fail if a process dies first."""
    deadline = time.monotonic() + timeout
    waiting = list(ports)
    while waiting:
        try:
            socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
            waiting.pop(0)
        except OSError:
            for proc in procs:
                if proc.poll() is not None:
                    case.fail(f"vtwist did not start: {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                case.fail("vtwist did not start")
            time.sleep(0.05)


def listening_target(case: Any, timeout: float) -> socket.socket:
    """A listening TCP socket on 127.0.0.1 (the proxied connections' target)."""
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(4)
    target.settimeout(timeout)
    case.addCleanup(target.close)
    return target


# -- reading and writing ---------------------------------------------------------------------
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


def socks_transfer(case: Any, socks_port: int, target: socket.socket, upload: bool,
                   read: Callable[[socket.socket], Any], write: Callable[[socket.socket], Any],
                   sample: Callable[[], None], deadline: float, wait: float,
                   connected: Callable[[], None] = lambda: None) -> tuple[Any, Any, float]:
    """One connection through the SOCKS inbound on ``socks_port`` to ``target``.

    The client writes with ``write`` and the target reads with ``read`` (``upload``), or the
    other way round; the writer then waits ``wait`` s for the reader's close. ``connected()``
    runs once the SOCKS handshake is done, ``sample()`` every 50 ms while the data moves.
    Returns (what ``read`` returned, what ``write`` returned, seconds the transfer took).
    """
    port = target.getsockname()[1]
    result: dict[str, Any] = {}

    def target_side() -> None:
        try:
            conn, _ = target.accept()
            with conn:
                if upload:
                    result["received"] = read(conn)
                else:
                    result["sent"] = write(conn)
                    conn.settimeout(wait)
                    conn.recv(1)  # wait for the client's FIN
        except Exception as e:  # noqa: BLE001 - reported by the test
            result["error"] = e

    thread = threading.Thread(target=target_side, daemon=True)
    thread.start()
    client = socks_connect(socks_port, "127.0.0.1", port)
    connected()
    done = threading.Event()

    def client_side() -> None:
        try:
            with client:
                if upload:
                    result["sent"] = write(client)
                    client.settimeout(wait)
                    client.recv(1)  # the target's close comes back as EOF
                else:
                    result["received"] = read(client)
                    client.shutdown(socket.SHUT_WR)
        except Exception as e:  # noqa: BLE001
            result["error"] = e
        finally:
            done.set()

    started = time.monotonic()
    worker = threading.Thread(target=client_side, daemon=True)
    worker.start()
    while not done.wait(0.05):
        sample()
        case.assertLess(time.monotonic(), deadline, "transfer took too long")
    elapsed = time.monotonic() - started
    thread.join(wait)
    worker.join(wait)
    if "error" in result:
        raise result["error"]
    return result["received"], result.get("sent"), elapsed


# -- two processes, a stalled reader ---------------------------------------------------------
class StalledReaderPair:
    """Mixin for a ``SynchronousTestCase``: 200 MB into a reader that stalls first, through two
    vtwist processes, the client (SOCKS inbound -> VMess outbound over ``stream``) and the
    server (VMess inbound over ``stream`` -> freedom). Neither process's RSS may grow by more
    than ``allowed_growth``. Tested in both directions.
    """

    #: the transport's streamSettings (both sides)
    stream: dict = {}
    #: the name printed with the measurements
    label = ""
    #: TLS under the transport (a shared test certificate)
    tls = False
    #: the server listens on UDP (no TCP port to wait for)
    udp = False
    allowed_growth = 6 * 1024 * 1024
    total = 200 * 1024 * 1024
    stall = 4.0
    deadline = 150.0

    def streams(self) -> tuple[dict, dict]:
        """The server's and the client's streamSettings."""
        if not self.tls:
            return self.stream, self.stream
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)  # type: ignore[attr-defined]
        cert_file, key_file = shared_server_cert("localhost").write(directory, "s")
        server = {**self.stream, "security": "tls", "tlsSettings": {"certificates": [
            {"certificateFile": cert_file, "keyFile": key_file}]}}
        client = {**self.stream, "security": "tls",
                  "tlsSettings": {"serverName": "localhost", "allowInsecure": True}}
        return server, client

    def setUp(self) -> None:
        """Start both processes and a target."""
        self.socks_port = free_port()
        server_port = free_port(udp_too=self.udp)
        server_stream, client_stream = self.streams()
        self.server = start_vtwist(self, {
            "log": {"loglevel": "warning", "access": os.devnull},
            "inbounds": [{"listen": "127.0.0.1", "port": server_port, "protocol": "vmess",
                          "settings": {"clients": [{"id": UUID, "alterId": 0}]},
                          "streamSettings": server_stream}],
            "outbounds": [{"protocol": "freedom"}]})
        self.client = start_vtwist(self, {
            "log": {"loglevel": "warning", "access": os.devnull},
            "inbounds": [{"protocol": "socks", "listen": "127.0.0.1", "port": self.socks_port,
                          "settings": {"auth": "noauth"}}],
            "outbounds": [{"protocol": "vmess", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": server_port,
                "users": [{"id": UUID, "alterId": 0, "security": "aes-128-gcm"}]}]},
                "streamSettings": client_stream}]})
        ports = [self.socks_port] + ([] if self.udp else [server_port])
        wait_listening(self, ports, [self.client, self.server], 20)
        self.target = listening_target(self, 30)

    def transfer(self, total: int, upload: bool, stall: float) -> dict[str, float]:
        """Move ``total`` bytes one way; the reading side stalls first. Peak RSS growth."""
        deadline = time.monotonic() + self.deadline
        procs = (self.client, self.server)
        base: list[int] = []
        peak: list[int] = []

        def connected() -> None:
            base.extend(rss(p.pid) for p in procs)
            peak.extend(base)

        def sample() -> None:
            peak[:] = [max(m, rss(p.pid)) for m, p in zip(peak, procs, strict=True)]

        received, sent, _ = socks_transfer(
            self, self.socks_port, self.target, upload,
            lambda sock: stalled_read(sock, stall, deadline),
            lambda sock: fast_write(sock, total), sample, deadline, 30, connected)
        self.assertEqual(received, (total, sent))  # type: ignore[attr-defined]
        return {"client": peak[0] - base[0], "server": peak[1] - base[1],
                "client_base": base[0], "server_base": base[1]}

    def check(self, upload: bool) -> None:
        """A warm-up, then the measured transfer; RSS growth printed and bounded."""
        self.transfer(8 * CHUNK, upload, stall=0.5)  # warm up code paths and allocator
        growth = self.transfer(self.total, upload, self.stall)
        direction = "upload" if upload else "download"
        print(f"\n{self.label} {direction}: 200 MB after a {self.stall:.0f} s stall; RSS growth "
              f"client +{growth['client'] / 2**20:.2f} MB "
              f"(of {growth['client_base'] / 2**20:.1f}), "
              f"server +{growth['server'] / 2**20:.2f} MB "
              f"(of {growth['server_base'] / 2**20:.1f})")
        for side in ("client", "server"):
            self.assertLess(growth[side], self.allowed_growth,  # type: ignore[attr-defined]
                            f"{side} RSS grew by {growth[side] / 2**20:.1f} MB ({direction})")

    def test_upload_into_stalled_target(self) -> None:
        self.check(upload=True)

    def test_download_into_stalled_client(self) -> None:
        self.check(upload=False)
