"""V2Ray ``policy``: per-level timeouts and buffer sizes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class LevelPolicy:
    """Timeouts (seconds) of one user level, with V2Ray's JSON defaults."""

    handshake: float = 4.0
    conn_idle: float = 300.0
    uplink_only: float = 2.0
    downlink_only: float = 5.0
    buffer_size: int | None = None  # KiB; None means the default
    #: vtwist's: how long an outbound may take to connect (V2Ray's system dialer uses 16 s)
    connect_timeout: float = 16.0
    #: ``statsUserUplink`` / ``statsUserDownlink``: count this level's users' traffic
    stats_user_uplink: bool = False
    stats_user_downlink: bool = False


#: vtwist's cap on one inbound's connections still in their handshake (V2Ray has none)
DEFAULT_MAX_HANDSHAKES = 4096


@dataclass(frozen=True)
class SystemPolicy:
    """``policy.system``: the inbound and outbound traffic counters (V2Ray 4.34), and
    vtwist's own ``maxHandshakes`` (per inbound; the oldest beyond it are shed; 0: no cap)."""

    stats_inbound_uplink: bool = False
    stats_inbound_downlink: bool = False
    stats_outbound_uplink: bool = False
    stats_outbound_downlink: bool = False
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES


@dataclass(frozen=True)
class Policy:
    """All levels; unknown levels fall back to the defaults."""

    levels: dict[int, LevelPolicy] = field(default_factory=dict)
    system: SystemPolicy = field(default_factory=SystemPolicy)

    def level(self, n: int = 0) -> LevelPolicy:
        """The policy of user level ``n``."""
        return self.levels.get(n) or DEFAULT_LEVEL

    def inbound_level(self, n: int = 0, timeout: int = 0) -> LevelPolicy:
        """Level ``n`` for an inbound whose deprecated ``timeout`` setting (socks, http,
        dokodemo-door) overrides ``connIdle``, as V2Ray 4.34 does, at level 0 only."""
        policy = self.level(n)
        if timeout and n == 0:
            policy = replace(policy, conn_idle=float(timeout))
        return policy


DEFAULT_LEVEL = LevelPolicy()
DEFAULT_POLICY = Policy()
