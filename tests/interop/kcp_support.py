"""Helpers for the mKCP interop tests: V2Ray configs that expose raw mKCP, readiness waits."""

from __future__ import annotations

import socket
import time
from typing import Any

from twisted.internet import defer, protocol, reactor, task


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free a moment ago (TCP too, for dokodemo)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
        try:
            with socket.socket() as t:
                t.bind(("127.0.0.1", port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def kcp_settings(header: str = "none", seed: str | None = None, **extra: Any) -> dict:
    """A kcpSettings object."""
    out: dict[str, Any] = {"header": {"type": header}, **extra}
    if seed is not None:
        out["seed"] = seed
    return out


def kcp_inbound_to_tcp(kcp_port: int, target_port: int, kcp: dict) -> dict:
    """V2Ray: dokodemo-door on mKCP ``kcp_port`` forwarding raw bytes to TCP ``target_port``."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "listen": "127.0.0.1", "port": kcp_port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": target_port, "network": "tcp"},
            "streamSettings": {"network": "kcp", "kcpSettings": kcp},
        }],
        "outbounds": [{"protocol": "freedom"}],
    }


def tcp_inbound_to_kcp(tcp_port: int, kcp_port: int, kcp: dict) -> dict:
    """V2Ray: dokodemo-door on TCP ``tcp_port``, freedom dialing ``kcp_port`` over mKCP."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{
            "listen": "127.0.0.1", "port": tcp_port, "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": kcp_port, "network": "tcp"},
        }],
        "outbounds": [{"protocol": "freedom",
                       "streamSettings": {"network": "kcp", "kcpSettings": kcp}}],
    }


async def wait_started(proc: Any, timeout: float = 10.0) -> None:
    """Wait until V2Ray logged that it started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"v2ray exited early:\n{proc.output()}")
        if "started" in proc.output():
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"v2ray did not start:\n{proc.output()}")


class Collector(protocol.Protocol):
    """Collects received bytes; ``wait(n)`` fires when n bytes arrived."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._want = 0
        self._waiter: defer.Deferred | None = None
        self.lost: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        self._check()

    def _check(self) -> None:
        if self._waiter is not None and len(self.buf) >= self._want:
            w, self._waiter = self._waiter, None
            w.callback(None)

    def wait(self, n: int) -> defer.Deferred:
        self._want = n
        self._waiter = defer.Deferred()
        d = self._waiter
        self._check()
        return d

    def connectionLost(self, reason: Any = None) -> None:
        if not self.lost.called:
            self.lost.callback([reason])
        if self._waiter is not None:
            w, self._waiter = self._waiter, None
            w.errback(AssertionError(f"connection lost with {len(self.buf)} bytes: {reason}"))
