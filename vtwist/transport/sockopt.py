"""``streamSettings.sockopt`` as V2Ray 4.34 reads it (``infra/conf/transport_internet.go``).

Plain data, no Twisted. vtwist uses ``tproxy`` (the dokodemo-door inbound's transparent
modes) and ``mark`` (SO_MARK on the sockets that inbound opens for TPROXY UDP replies);
``tcpFastOpen`` and ``acceptProxyProtocol`` are read and not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtwist.config.node import Node

#: V2Ray's modes; anything else means "off" (V2Ray says nothing, vtwist warns).
TPROXY_MODES = ("off", "redirect", "tproxy")


@dataclass(frozen=True)
class SockoptSettings:
    """Validated ``sockopt``."""

    mark: int = 0
    tproxy: str = "off"
    tcp_fast_open: bool | None = None
    accept_proxy_protocol: bool = False


def parse_sockopt(node: Node) -> SockoptSettings:
    """Validate a ``sockopt`` object (``node`` may wrap None: the defaults)."""
    node = node.or_empty()
    mark = node.int("mark", 0, -(2 ** 31), 2 ** 31 - 1)
    tproxy = node.str("tproxy", "off", lower=True) or "off"
    if tproxy not in TPROXY_MODES:
        node.warn(f"tproxy: expected redirect, tproxy or off, got {tproxy!r}; off")
        tproxy = "off"
    tfo = node.bool("tcpFastOpen") if node.has("tcpFastOpen") else None
    accept = node.bool("acceptProxyProtocol", False)
    node.warn_unknown()
    return SockoptSettings(mark=mark, tproxy=tproxy, tcp_fast_open=tfo,
                           accept_proxy_protocol=accept)
