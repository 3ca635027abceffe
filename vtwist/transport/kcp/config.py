"""mKCP settings (``kcpSettings``) and the window sizes V2Ray derives from them.

Plain data, no JSON handling here (see :func:`from_json` for the V2Ray JSON shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .crypt import SeedAuthenticator, SimpleAuthenticator
from .obfs import HEADER_SIZES
from .segment import DATA_OVERHEAD

if TYPE_CHECKING:
    from vtwist.config.node import Node

MIB = 1024 * 1024
UINT32_MAX = 0xFFFFFFFF


@dataclass(frozen=True)
class KCPConfig:
    """Validated mKCP settings with V2Ray 4.34 defaults; sizes are post-JSON."""

    mtu: int = 1350
    tti: int = 50
    uplink_capacity: int = 5
    downlink_capacity: int = 20
    congestion: bool = False
    read_buffer_bytes: int = 2 * MIB
    write_buffer_bytes: int = 2 * MIB
    header_type: str = "none"
    seed: str | None = None

    def __post_init__(self) -> None:
        if not 576 <= self.mtu <= 1460:
            raise ValueError(f"mtu {self.mtu} out of range 576..1460")
        if not 10 <= self.tti <= 100:
            raise ValueError(f"tti {self.tti} out of range 10..100")
        if self.header_type not in HEADER_SIZES:
            raise ValueError(f"unknown header type {self.header_type!r}")
        for name in ("uplink_capacity", "downlink_capacity", "read_buffer_bytes",
                     "write_buffer_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @property
    def header_size(self) -> int:
        """Bytes of obfuscation header per datagram."""
        return HEADER_SIZES[self.header_type]

    @property
    def auth_overhead(self) -> int:
        """Envelope overhead counted in the MTU (6 simple, 16 seed; not the nonce)."""
        return SeedAuthenticator.overhead if self.seed is not None else SimpleAuthenticator.overhead

    @property
    def mss(self) -> int:
        """Largest DATA payload per segment."""
        return self.mtu - self.header_size - self.auth_overhead - DATA_OVERHEAD

    @property
    def plain_budget(self) -> int:
        """Largest envelope plaintext vtwist packs into one datagram."""
        return self.mtu - self.header_size - self.auth_overhead

    def _in_flight(self, capacity: int) -> int:
        size = ((capacity * MIB) & 0xFFFFFFFF) // self.mtu // (1000 // self.tti)
        return max(8, size)

    @property
    def sending_in_flight(self) -> int:
        """Per-flush send budget from uplinkCapacity."""
        return self._in_flight(self.uplink_capacity)

    @property
    def receiving_window(self) -> int:
        """Receive window (segments) from downlinkCapacity."""
        return self._in_flight(self.downlink_capacity)

    @property
    def receive_window(self) -> int:
        """Receive window vtwist advertises (segments): V2Ray's :attr:`receiving_window`,
        or what ``readBufferSize`` holds when that is more.

        V2Ray documents ``readBufferSize`` as a connection's read buffer, but 4.34 uses it
        for nothing and buffers at most ``receiving_window`` segments (capacity x tti).
        Under loss that window, not the link, bounds goodput: a hole at its head stays
        open about two round trips.  vtwist lets out-of-order and unread data fill the
        read buffer the setting names (2 MiB by default: 1553 segments, V2Ray's 776).
        """
        return max(self.receiving_window, self.read_buffer_bytes // self.mtu)

    @property
    def send_buffer_segs(self) -> int:
        """Segments the send window may hold before writers are paused."""
        return self.write_buffer_bytes // self.mtu

    @property
    def socket_buffer_bytes(self) -> int:
        """Kernel socket buffer size suited to the capacities (at least 4 MiB)."""
        peak = max(self.receive_window, self.sending_in_flight * 20) * (self.mtu + 64)
        return max(4 * MIB, min(64 * MIB, 2 * peak))


def buffer_bytes(mb: int) -> int:
    """V2Ray's JSON buffer size rule: 0 means 512 KiB, n means n MiB."""
    return 512 * 1024 if mb == 0 else mb * MIB


def parse_kcp_settings(node: Node) -> KCPConfig:
    """Validate a ``kcpSettings`` object the way V2Ray 4.34 does.

    ``seed`` present (even ``""``) selects AES-GCM; absent or null selects the simple
    authenticator.  Errors are ConfigErrors naming the JSON path.
    """
    node = node.or_empty()
    node.require_object()
    mtu = node.int("mtu", 1350, 576, 1460)
    tti = node.int("tti", 50, 10, 100)
    up = node.int("uplinkCapacity", 5, 0, UINT32_MAX)
    down = node.int("downlinkCapacity", 20, 0, UINT32_MAX)
    congestion = node.bool("congestion", False)
    read_mb = node.int("readBufferSize", 2, 0, 4095)
    write_mb = node.int("writeBufferSize", 2, 0, 4095)
    header_type = "none"
    header = node.get("header", None)
    if header.value is not None:
        # V2Ray reads only "type" and ignores the header object's other keys
        header_type = header.str("type", choices=tuple(HEADER_SIZES), lower=True)
    seed_node = node.get("seed", None)
    seed = None if seed_node.value is None else seed_node.as_str()
    node.warn_unknown()
    return KCPConfig(
        mtu=mtu,
        tti=tti,
        uplink_capacity=up,
        downlink_capacity=down,
        congestion=congestion,
        read_buffer_bytes=buffer_bytes(read_mb),
        write_buffer_bytes=buffer_bytes(write_mb),
        header_type=header_type,
        seed=seed,
    )


def parse_settings(node: Node, inbound: bool) -> KCPConfig:
    """The registry's parser: ``kcpSettings`` (the same on both sides)."""
    return parse_kcp_settings(node)
