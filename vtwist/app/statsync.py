"""Worker counters summed in the supervisor (``--workers N`` with ``stats``/``api``/``metrics``).

Each worker counts in its own :class:`~vtwist.tunnel.stats.StatsManager`, as one process
does. Every :data:`INTERVAL` seconds, and once more when it stops, it calls :func:`take`:
what every counter grew by since the last call (the worker's counter goes back to 0, so a
delta is never sent twice), the connections open now, the mKCP census (absolute figures).
The supervisor feeds each message to :meth:`Aggregate.apply`, which adds the deltas to a
StatsManager of its own: the one the API's StatsService and the metrics endpoint read. A
reset through the API zeroes the aggregate; deltas that arrive after it count from zero,
exactly as one process's counters do.

What a worker had not pushed when it was killed (SIGKILL, a crash) is lost: at most its
last :data:`INTERVAL` of traffic. A counter appears in the aggregate (at 0) as soon as a
worker has it, so queries list the same names as one process would.

Messages are plain dicts (JSON on the control channel); no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vtwist.tunnel.stats import Counter, Histogram, StatsManager

#: seconds between two pushes of a worker (the most the aggregate lags behind)
INTERVAL = 0.5

#: mKCP figures of one (role, header): [live sessions, DATA segments sent,
#: retransmissions, sum of the live sessions' smoothed RTT (ms), sessions with an RTT]
KcpFigures = dict[tuple[str, str], list[float]]


def take(stats: StatsManager, known: set[Any],
         kcp: Callable[[], KcpFigures] | None = None) -> dict[str, Any]:
    """The worker's side: what ``stats`` counted since the last call, as a message.

    Counters, hidden totals, failures and handshake histograms are moved out (the worker's
    copy is zeroed); ``known`` remembers the names already announced so that a new counter
    is sent once even at 0. ``active`` is the number of connections open now.
    """
    stats.settle()
    counters: dict[str, int] = {}
    for name, counter in stats.counters.items():
        if counter.value or name not in known:
            counters[name] = counter.value
            counter.value = 0
            known.add(name)
    totals: list[list[Any]] = []
    for (kind, name, direction), counter in stats.totals.items():
        key = ("total", kind, name, direction)
        if counter.value or key not in known:
            totals.append([kind, name, direction, counter.value])
            counter.value = 0
            known.add(key)
    failed = {reason: count for reason, count in stats.failed.items() if count}
    for reason in failed:
        stats.failed[reason] = 0
    handshakes: dict[str, list[Any]] = {}
    for protocol, histogram in stats.handshakes.items():
        if histogram.count:
            handshakes[protocol] = [list(histogram.counts), histogram.total, histogram.count]
            histogram.counts = [0] * len(histogram.bounds)
            histogram.total = 0.0
            histogram.count = 0
    opened, stats.opened = stats.opened, 0
    message: dict[str, Any] = {"counters": counters, "totals": totals, "failed": failed,
                               "handshakes": handshakes, "opened": opened,
                               "active": stats.active}
    if kcp is not None:
        message["kcp"] = [[role, header, *figures]
                          for (role, header), figures in sorted(kcp().items())]
    return message


class Aggregate:
    """The supervisor's side: the sum of every worker's messages in :attr:`stats`."""

    def __init__(self, stats: StatsManager) -> None:
        self.stats = stats
        #: connections open in each worker (by worker key), as last reported
        self.active: dict[Any, int] = {}
        #: each live worker's mKCP figures, as last reported
        self.kcp: dict[Any, KcpFigures] = {}
        #: the counted mKCP figures of workers that ended: (role, header) -> [sent, retrans]
        self.kcp_ended: dict[tuple[str, str], list[float]] = {}

    def apply(self, worker: Any, message: dict[str, Any]) -> None:
        """Add one message of ``worker`` (any hashable key naming the worker process)."""
        stats = self.stats
        for name, delta in message.get("counters", {}).items():
            stats.register(str(name)).value += int(delta)
        for kind, name, direction, delta in message.get("totals", ()):
            key = (str(kind), str(name), int(direction))
            counter = stats.totals.get(key)
            if counter is None:
                counter = stats.totals[key] = Counter(f"{kind}>>>{name}>>>{direction}")
            counter.value += int(delta)
        for reason, delta in message.get("failed", {}).items():
            stats.failed[str(reason)] = stats.failed.get(str(reason), 0) + int(delta)
        for protocol, (counts, total, count) in message.get("handshakes", {}).items():
            histogram = stats.handshakes.get(protocol)
            if histogram is None:
                histogram = stats.handshakes[str(protocol)] = Histogram()
            for i, delta in enumerate(counts[:len(histogram.counts)]):
                histogram.counts[i] += int(delta)
            histogram.total += float(total)
            histogram.count += int(count)
        stats.opened += int(message.get("opened", 0))
        self.active[worker] = int(message.get("active", 0))
        stats.active = sum(self.active.values())
        if "kcp" in message:
            self.kcp[worker] = {(str(row[0]), str(row[1])): [float(v) for v in row[2:7]]
                                for row in message["kcp"]}

    def worker_gone(self, worker: Any) -> None:
        """``worker`` ended: its connections are closed; its mKCP counts stay in the totals."""
        self.active.pop(worker, None)
        self.stats.active = sum(self.active.values())
        for key, figures in self.kcp.pop(worker, {}).items():
            ended = self.kcp_ended.setdefault(key, [0.0, 0.0])
            ended[0] += figures[1]
            ended[1] += figures[2]

    def kcp_figures(self) -> KcpFigures:
        """The mKCP figures of every worker summed (those of ended workers' sessions too)."""
        out: KcpFigures = {key: [0.0, sent, retrans, 0.0, 0.0]
                           for key, (sent, retrans) in self.kcp_ended.items()}
        for figures in self.kcp.values():
            for key, values in figures.items():
                row = out.setdefault(key, [0.0] * 5)
                for i, value in enumerate(values[:5]):
                    row[i] += value
        return out

