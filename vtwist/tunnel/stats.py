"""Traffic counters with V2Ray's names, fed by the relays without costing them anything.

A relay already adds each read's length to its ``bytes`` list (one integer add, no lock:
everything runs on the reactor thread). :meth:`StatsManager.track` remembers that list with
the counters its flow feeds (a :class:`Flow`); :meth:`StatsManager.settle` — on every query,
and when the flow ends — moves what the lists grew by since into the counters. So the
counters are exact whenever they are read, and the relay's hot path stays one add per read.

Counter names are V2Ray's: ``inbound>>>TAG>>>traffic>>>uplink`` (and ``downlink``),
``outbound>>>TAG>>>traffic>>>…``, ``user>>>EMAIL>>>traffic>>>…``, made per V2Ray 4.34's
switches (``policy.system.statsInboundUplink`` …, ``policy.levels.N.statsUserUplink`` …),
inbound and outbound ones when the service starts (tagged handlers only), user ones on a
user's first connection. vtwist counts payload bytes (what the tunnel moves), where V2Ray's
inbound and outbound counters also count their protocol's framing.

With ``metrics`` on, every flow also feeds hidden per-inbound/outbound/user totals (never
reset, not in queries) and the connection counts the Prometheus exporter reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vtwist.policy import SystemPolicy

UPLINK = 0
DOWNLINK = 1


class Counter:
    """One named integer."""

    __slots__ = ("name", "value")

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 0


class Flow:
    """One relay's bytes (``counts``: [uplink, downlink], the relay's own list) and the
    counters they go to."""

    __slots__ = ("counts", "seen", "up", "down")

    def __init__(self, counts: list[int], up: tuple[Counter, ...],
                 down: tuple[Counter, ...]) -> None:
        self.counts = counts
        self.seen = [counts[0], counts[1]]
        self.up = up
        self.down = down

    def settle(self) -> None:
        """Add what ``counts`` grew by since the last settle to the counters."""
        counts, seen = self.counts, self.seen
        grown = counts[0] - seen[0]
        if grown:
            seen[0] = counts[0]
            for counter in self.up:
                counter.value += grown
        grown = counts[1] - seen[1]
        if grown:
            seen[1] = counts[1]
            for counter in self.down:
                counter.value += grown


@dataclass
class Histogram:
    """Observations in fixed buckets (upper bounds, seconds), Prometheus style."""

    bounds: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.count += 1
        self.total += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break


class StatsManager:
    """V2Ray's counters (``api``: :meth:`get`, :meth:`query`), the hidden totals and
    connection counts behind the metrics, and the live flows feeding them."""

    def __init__(self, switches: SystemPolicy | None = None, *, counters: bool = True,
                 metrics: bool = False) -> None:
        #: V2Ray's counters are kept (``"stats": {}``)
        self.enabled = counters
        self.switches = switches or SystemPolicy()
        self.metrics = metrics
        self.counters: dict[str, Counter] = {}
        #: hidden totals for the metrics: (kind, name, direction) -> Counter
        self.totals: dict[tuple[str, str, int], Counter] = {}
        self.flows: set[Flow] = set()
        #: stream and UDP sessions: now open, ever opened, failed by reason
        self.active = 0
        self.opened = 0
        self.failed: dict[str, int] = {}
        #: handshake latency by inbound protocol (first byte to a routed request)
        self.handshakes: dict[str, Histogram] = {}

    # -- registration --------------------------------------------------------------------
    def register(self, name: str) -> Counter:
        """The counter ``name``, created at 0 if new."""
        counter = self.counters.get(name)
        if counter is None:
            counter = self.counters[name] = Counter(name)
        return counter

    def register_handler(self, kind: str, tag: str) -> None:
        """Create a tagged inbound's or outbound's counters (``kind``: inbound/outbound) as
        V2Ray does when the handler starts, per the switches."""
        self._handler(kind, tag, True)
        self._handler(kind, tag, False)

    def handler_counter(self, kind: str, tag: str, up: bool) -> Counter | None:
        """A tagged inbound's or outbound's uplink (``up``) or downlink counter, None when
        its switch is off."""
        return self._handler(kind, tag, up)

    def _handler(self, kind: str, tag: str, up: bool) -> Counter | None:
        switches = self.switches
        on = (switches.stats_inbound_uplink if up else switches.stats_inbound_downlink) \
            if kind == "inbound" else \
            (switches.stats_outbound_uplink if up else switches.stats_outbound_downlink)
        if not (self.enabled and on and tag):
            return None
        return self.register(f"{kind}>>>{tag}>>>traffic>>>{'uplink' if up else 'downlink'}")

    def _total(self, kind: str, name: str, direction: int) -> Counter:
        key = (kind, name, direction)
        counter = self.totals.get(key)
        if counter is None:
            counter = self.totals[key] = Counter(f"{kind}>>>{name}>>>{direction}")
        return counter

    def counters_for(self, inbound_tag: str, outbound_tag: str, email: str | None,
                     user_uplink: bool = False, user_downlink: bool = False,
                     ) -> tuple[tuple[Counter, ...], tuple[Counter, ...]]:
        """The counters one flow feeds: (uplink ones, downlink ones)."""
        up: list[Counter] = []
        down: list[Counter] = []
        for kind, tag in (("inbound", inbound_tag), ("outbound", outbound_tag)):
            counter = self._handler(kind, tag, True)
            if counter is not None:
                up.append(counter)
            counter = self._handler(kind, tag, False)
            if counter is not None:
                down.append(counter)
        if email and self.enabled:
            if user_uplink:
                up.append(self.register(f"user>>>{email}>>>traffic>>>uplink"))
            if user_downlink:
                down.append(self.register(f"user>>>{email}>>>traffic>>>downlink"))
        if self.metrics:
            for kind, name in (("inbound", inbound_tag), ("outbound", outbound_tag),
                               ("user", email or "")):
                if name:
                    up.append(self._total(kind, name, UPLINK))
                    down.append(self._total(kind, name, DOWNLINK))
        return tuple(up), tuple(down)

    # -- flows ---------------------------------------------------------------------------
    def track(self, counts: list[int], up: tuple[Counter, ...],
              down: tuple[Counter, ...]) -> Flow:
        """Start counting a relay's ``counts`` ([uplink, downlink] bytes) into the counters."""
        flow = Flow(counts, up, down)
        if up or down:
            self.flows.add(flow)
        return flow

    def untrack(self, flow: Flow) -> None:
        """The flow ended: settle it one last time and forget it."""
        flow.settle()
        self.flows.discard(flow)

    def settle(self) -> None:
        """Bring every counter up to date with the live flows."""
        for flow in self.flows:
            flow.settle()

    # -- connections ---------------------------------------------------------------------
    def connection_opened(self) -> None:
        """A stream or UDP session got its outbound."""
        self.active += 1
        self.opened += 1

    def connection_closed(self) -> None:
        """A stream or UDP session that :meth:`connection_opened` counted ended."""
        self.active -= 1

    def connection_failed(self, reason: str) -> None:
        """A connection failed (no route, connect timeout, a refused client...)."""
        self.failed[reason] = self.failed.get(reason, 0) + 1

    def handshake(self, protocol: str, seconds: float) -> None:
        """An inbound's handshake took ``seconds``."""
        histogram = self.handshakes.get(protocol)
        if histogram is None:
            histogram = self.handshakes[protocol] = Histogram()
        histogram.observe(seconds)

    # -- queries (StatsService) ------------------------------------------------------------
    def get(self, name: str, reset: bool = False) -> int | None:
        """The value of counter ``name`` (None: no such counter); ``reset`` zeroes it."""
        counter = self.counters.get(name)
        if counter is None:
            return None
        self.settle()
        value = counter.value
        if reset:
            counter.value = 0
        return value

    def query(self, pattern: str, reset: bool = False) -> list[tuple[str, int]]:
        """``(name, value)`` of every counter whose name contains ``pattern`` (V2Ray 4.34
        matches by substring; an empty pattern matches all), sorted by name."""
        self.settle()
        out: list[tuple[str, int]] = []
        for name in sorted(self.counters):
            if pattern in name:
                counter = self.counters[name]
                out.append((name, counter.value))
                if reset:
                    counter.value = 0
        return out



#: Words in a refusal's reason -> the failure reason the metrics count it under.
_REFUSALS = (("replay", "replay"), ("duplicate session", "replay"), ("skew", "skew"),
             ("unknown user", "unknown_user"), ("timeout", "timeout"),
             ("within the handshake", "timeout"), ("password", "auth"),
             ("unknown", "unknown_user"))


def refusal_reason(protocol: str, why: str) -> str:
    """The bounded reason a refused client is counted under: replay, skew, unknown_user,
    timeout, auth, or probe (any other bad handshake)."""
    lowered = why.lower()
    for words, reason in _REFUSALS:
        if words in lowered:
            return reason
    return "probe"


def failure_reason(failure: Any, kind: Any) -> str:
    """The bounded reason a failed outbound connection is counted under: ``dispatch`` (no
    route, a lookup or an outbound that refused to start), ``timeout``, ``refused``,
    ``unreachable``, ``other``. ``kind`` is the failure's
    :class:`~vtwist.tunnel.failures.ConnectFailure`."""
    name = type(getattr(failure, "value", None)).__name__
    if name in ("NoOutbound", "DNSLookupError", "UnknownHostError"):
        return "dispatch"
    value = getattr(kind, "name", "OTHER")
    return {"TIMED_OUT": "timeout", "REFUSED": "refused", "HOST_UNREACHABLE": "unreachable",
            "NETWORK_UNREACHABLE": "unreachable"}.get(value, "other")
