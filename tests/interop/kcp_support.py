"""Helpers for the mKCP interop tests: V2Ray configs that expose raw mKCP."""

from __future__ import annotations

from typing import Any


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
