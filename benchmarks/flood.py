"""Handshake floods: ``python -m benchmarks.flood [--connections 5000] [--protocol P ...]
[--mode idle|slowloris ...] [--cap N]``.

For each inbound protocol (socks, http, vmess, vless, trojan, shadowsocks) a vtwist server
process gets ``--connections`` connections at once that send nothing (``idle``) or the bytes
of a valid request at one byte per second (``slowloris``). Meanwhile a real client (SOCKS
into a vtwist client process whose outbound speaks the protocol to the server) connects every
0.5 s and echoes 1 KiB. Reported: how many flood connections the server shed at once (its
``policy.system.maxHandshakes``, ``--cap``), when the others were closed (they must close at
the handshake deadline, 4 s, plus the probe guard's 2-8 s for the disguised protocols), the
real client's latency during the flood (target: under 1 s), and the server's RSS before, at
its peak and after (memory per held connection).
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from benchmarks.procs import ProcessGroup, free_port, vtwist_command, wait_port

PROTOCOLS = ("socks", "http", "vmess", "vless", "trojan", "shadowsocks")
UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
SECRET = "flood-secret"
HANDSHAKE = 4


def server_config(name: str, port: int, cap: int | None) -> tuple[dict, dict]:
    """The server's config and the client's outbound for protocol ``name``."""
    server = {"address": "127.0.0.1", "port": port}
    settings: dict[str, Any]
    if name == "socks":
        settings, out = {"auth": "noauth"}, {"servers": [server]}
    elif name == "http":
        settings, out = {}, {"servers": [server]}
    elif name == "vmess":
        settings = {"clients": [{"id": UUID}]}
        out = {"vnext": [{**server, "users": [{"id": UUID, "security": "aes-128-gcm"}]}]}
    elif name == "vless":
        settings = {"clients": [{"id": UUID}], "decryption": "none"}
        out = {"vnext": [{**server, "users": [{"id": UUID, "encryption": "none"}]}]}
    elif name == "trojan":
        settings, out = {"clients": [{"password": SECRET}]}, {"servers": [
            {**server, "password": SECRET}]}
    else:
        settings = {"method": "aes-128-gcm", "password": SECRET}
        out = {"servers": [{**server, "method": "aes-128-gcm", "password": SECRET}]}
    system = {"maxHandshakes": cap} if cap is not None else {}
    config = {"log": {"loglevel": "warning", "access": "none"},
              "policy": {"levels": {"0": {"handshake": HANDSHAKE}}, "system": system},
              "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": name,
                            "settings": settings}],
              "outbounds": [{"protocol": "freedom"}]}
    return config, {"protocol": name, "settings": out}


def request_bytes(name: str, port: int) -> bytes:
    """A valid first request of ``name`` to 127.0.0.1:``port`` (what slowloris drips)."""
    from vtwist.address import Destination

    dest = Destination.tcp("127.0.0.1", port)
    if name == "socks":
        from vtwist.proxy.socks import codec
        return codec.client_greeting() + codec.client_request(codec.CMD_CONNECT, "127.0.0.1",
                                                              port)
    if name == "http":
        return f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    if name == "vmess":
        from vtwist.proxy.vmess.handshake import ClientSession
        from vtwist.proxy.vmess.users import Account
        return ClientSession(Account.from_text(UUID), dest).request_header(time.time())
    if name == "vless":
        from vtwist.proxy.vless import codec
        from vtwist.proxy.vmess.ids import parse_uuid
        return codec.encode_request(parse_uuid(UUID), codec.CMD_TCP, dest)
    if name == "trojan":
        from vtwist.proxy.trojan import codec
        return codec.encode_request(codec.password_key(SECRET), codec.CMD_TCP, dest)
    from vtwist.proxy.shadowsocks.aead import Account as SSAccount
    from vtwist.proxy.shadowsocks.codec import ClientStream
    return b"".join(ClientStream(SSAccount.from_password("aes-128-gcm", SECRET), dest)
                    .encode(b"x"))


class Flooder(protocol.Protocol):
    """One flood connection: optionally drips ``payload``; notes open and close times."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.sent = 0
        self.opened = self.closed = 0.0

    def connectionMade(self) -> None:
        self.opened = time.monotonic()

    def drip(self) -> None:
        if not self.closed and self.sent < len(self.payload):
            self.transport.write(self.payload[self.sent:self.sent + 1])
            self.sent += 1

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = time.monotonic()


class Echo(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


class SocksEcho(protocol.Protocol):
    """SOCKS5 CONNECT to the echo server, 1 KiB there and back."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.buf = b""
        self.stage = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(b"\x05\x01\x00" + b"\x05\x01\x00\x01\x7f\x00\x00\x01"
                             + struct.pack(">H", self.port))

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if self.stage == 0 and len(self.buf) >= 12:
            self.buf = self.buf[12:]
            self.stage = 1
            self.transport.write(b"e" * 1024)
        if self.stage == 1 and len(self.buf) >= 1024 and not self.done.called:
            self.done.callback(None)
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.errback(RuntimeError(f"closed: {reason}"))


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    """A /proc/PID/status figure in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def real_client(reactor: Any, socks_port: int, echo_port: int) -> float | None:
    """Seconds for one real client's connect + 1 KiB echo; None if it failed."""
    started = time.monotonic()
    try:
        p = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", socks_port),
                                  SocksEcho(echo_port))
        await p.done.addTimeout(10, reactor)
    except Exception:  # noqa: BLE001 - a failure is counted
        return None
    return time.monotonic() - started


async def one(reactor: Any, group: ProcessGroup, name: str, mode: str, n: int,
              cap: int | None, echo_port: int) -> str:
    """One protocol and mode; the report line."""
    port, socks_port = free_port(), free_port()
    config, outbound = server_config(name, port, cap)
    server = group.spawn(f"{name}-{mode}-server",
                         vtwist_command(group.write_config(f"{name}-{mode}-server", config)))
    client = group.spawn(f"{name}-{mode}-client", vtwist_command(group.write_config(
        f"{name}-{mode}-client", {"log": {"loglevel": "warning", "access": "none"},
                                  "inbounds": [{"listen": "127.0.0.1", "port": socks_port,
                                                "protocol": "socks",
                                                "settings": {"auth": "noauth"}}],
                                  "outbounds": [outbound]})))
    try:
        wait_port(port, server.popen)
        wait_port(socks_port, client.popen)
        warm = await real_client(reactor, socks_port, echo_port)
        rss_before = rss_kb(server.pid)
        payload = request_bytes(name, echo_port) if mode == "slowloris" else b""
        flood = [Flooder(payload) for _ in range(n)]
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        started = time.monotonic()
        await defer.gatherResults([connectProtocol(endpoint, f) for f in flood],
                                  consumeErrors=True)
        dripper = task.LoopingCall(lambda: [f.drip() for f in flood])
        if payload:
            dripper.start(1.0)
        latencies: list[float | None] = []
        peak = rss_before
        while time.monotonic() - started < HANDSHAKE + 10 and not all(f.closed for f in flood):
            latencies.append(await real_client(reactor, socks_port, echo_port))
            peak = max(peak, rss_kb(server.pid))
            await task.deferLater(reactor, 0.5, lambda: None)
        if dripper.running:
            dripper.stop()
        await task.deferLater(reactor, 2, lambda: None)
        rss_after = rss_kb(server.pid)
        lives = sorted(f.closed - f.opened for f in flood if f.closed)
        shed = sum(1 for t in lives if t < 1.0)
        held = [t for t in lives if t >= 1.0]
        ok = [t for t in latencies if t is not None]
        held_at_once = n - shed
        per_conn = (peak - rss_before) / held_at_once if held_at_once else 0.0
        return (f"{name} {mode}: {n} connections, {shed} shed at once, {len(held)} closed "
                f"after {_q(held)} s, {n - len(lives)} still open at the end; real client "
                f"(warm {warm or 0:.3f} s) {len(ok)}/{len(latencies)} served, median "
                f"{statistics.median(ok) if ok else float('nan'):.3f} s, max "
                f"{max(ok) if ok else float('nan'):.3f} s; server RSS {rss_before // 1024} -> "
                f"peak {peak // 1024} -> {rss_after // 1024} MB "
                f"({per_conn:.1f} KiB per held connection)")
    finally:
        group.stop(client)
        group.stop(server)


def _q(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"min {values[0]:.1f} / median {statistics.median(values):.1f} / "
            f"max {values[-1]:.1f}")


async def main(reactor: Any, argv: list[str]) -> None:
    """Every protocol and mode asked for."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.flood",
                                description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--protocol", action="append", choices=PROTOCOLS)
    p.add_argument("--mode", action="append", choices=("idle", "slowloris"))
    p.add_argument("--cap", type=int, default=None,
                   help="policy.system.maxHandshakes of the server (default: vtwist's)")
    args = p.parse_args(argv)
    echo = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
    group = ProcessGroup(Path(tempfile.mkdtemp(prefix="flood-")))
    try:
        for name in args.protocol or PROTOCOLS:
            for mode in args.mode or ("idle", "slowloris"):
                print(await one(reactor, group, name, mode, args.connections, args.cap,
                                echo.getHost().port), flush=True)
    finally:
        group.close()
        await echo.stopListening()


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
