"""Helpers for the mKCP interop tests: V2Ray configs that expose raw mKCP, a collector."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol


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
