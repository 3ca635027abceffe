"""Prometheus ``/metrics`` (the ``metrics`` section, vtwist's own) with ``prometheus_client``.

Nothing is counted for the exporter on the hot path: a scrape reads the tunnel service's
:class:`~vtwist.tunnel.stats.StatsManager` (bytes per inbound, outbound and user,
connections, failures by reason, handshake latency) and the mKCP session census
(:mod:`vtwist.transport.kcp.census`); ``prometheus_client``'s process collector adds the
process's resident memory and open file descriptors. Labels stay bounded: inbound and
outbound tags, users' emails, failure reasons, protocol names, mKCP role and header type —
never a destination.

With ``--workers N`` the supervisor serves ``/metrics`` (:mod:`vtwist.app.controlplane`):
its StatsManager is the sum the workers push, and the mKCP figures are theirs
(:func:`kcp_figures` in each worker; ``context.kcp_figures`` in the supervisor).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.twisted import MetricsResource
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from vtwist.config.model import MetricsConfig
from vtwist.transport.kcp import census
from vtwist.tunnel.stats import DOWNLINK, StatsManager

log = Logger(namespace="vtwist.metrics")

#: every failure reason the tunnel counts, exported at 0 before the first one
REASONS = ("dispatch", "timeout", "refused", "unreachable", "other", "probe", "replay",
           "skew", "unknown_user", "auth")


class TunnelCollector:
    """Reads a :class:`StatsManager` and the mKCP census at scrape time."""

    def __init__(self, stats: StatsManager,
                 kcp: Callable[[], dict[tuple[str, str], list[float]]] | None = None,
                 ) -> None:
        self.stats = stats
        #: the mKCP figures (default: this process's census; a supervisor: its workers')
        self.kcp = kcp or kcp_figures

    def describe(self) -> list[Metric]:
        """Nothing up front (the families depend on the traffic)."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The families, as of now."""
        stats = self.stats
        stats.settle()
        traffic = CounterMetricFamily(
            "vtwist_traffic_bytes", "Payload bytes relayed, by inbound/outbound tag or user.",
            labels=["kind", "name", "direction"])
        for (kind, name, direction), counter in sorted(stats.totals.items()):
            traffic.add_metric([kind, name, "downlink" if direction == DOWNLINK else "uplink"],
                               counter.value)
        yield traffic
        yield GaugeMetricFamily("vtwist_connections_active",
                                "Streams and UDP sessions being relayed now.", stats.active)
        yield CounterMetricFamily("vtwist_connections", "Streams and UDP sessions relayed.",
                                  stats.opened)
        failed = CounterMetricFamily(
            "vtwist_connections_failed", "Connections that failed or were refused, by reason.",
            labels=["reason"])
        for reason in sorted(set(REASONS) | set(stats.failed)):
            failed.add_metric([reason], stats.failed.get(reason, 0))
        yield failed
        handshake = HistogramMetricFamily(
            "vtwist_handshake_seconds", "Inbound handshake latency (connection to request).",
            labels=["protocol"])
        for protocol, histogram in sorted(stats.handshakes.items()):
            buckets: list[tuple[str, float]] = []
            running = 0
            for bound, count in zip(histogram.bounds, histogram.counts, strict=True):
                running += count
                buckets.append((repr(bound), running))
            buckets.append(("+Inf", histogram.count))
            handshake.add_metric([protocol], buckets, histogram.total)
        yield handshake
        yield from kcp_metrics(self.kcp())


def kcp_figures() -> dict[tuple[str, str], list[float]]:
    """This process's mKCP census by (role, header): [live sessions, DATA segments sent,
    retransmissions, sum of the live sessions' smoothed RTT in ms, live sessions with an
    RTT] (what a worker pushes to its supervisor, :mod:`vtwist.app.statsync`)."""
    live: dict[tuple[str, str], list[Any]] = {}
    for transport in list(census.LIVE):
        live.setdefault(census.labels(transport), []).append(transport.session)
    figures: dict[tuple[str, str], list[float]] = {}
    for key in sorted(set(live) | set(census.RETIRED)):
        retired = census.RETIRED.get(key, [0, 0, 0])
        current = live.get(key, [])
        sampled = [s.srtt for s in current if s.srtt]
        figures[key] = [len(current), retired[1] + sum(s.segments_sent for s in current),
                        retired[2] + sum(s.retransmissions for s in current),
                        sum(sampled), len(sampled)]
    return figures


def kcp_metrics(figures: dict[tuple[str, str], list[float]] | None = None,
                ) -> Iterator[Metric]:
    """mKCP sessions, segments, retransmissions, loss and RTT by role and header type
    (``figures``: as :func:`kcp_figures` gives them; default: this process's)."""
    figures = kcp_figures() if figures is None else figures
    sessions = GaugeMetricFamily("vtwist_kcp_sessions", "Live mKCP sessions.",
                                 labels=["role", "header"])
    sent = CounterMetricFamily("vtwist_kcp_segments_sent", "mKCP DATA segments sent.",
                               labels=["role", "header"])
    retrans = CounterMetricFamily("vtwist_kcp_retransmissions",
                                  "mKCP DATA segments sent again after a timeout.",
                                  labels=["role", "header"])
    loss = GaugeMetricFamily("vtwist_kcp_loss_ratio",
                             "mKCP retransmissions per DATA segment sent (all sessions).",
                             labels=["role", "header"])
    rtt = GaugeMetricFamily("vtwist_kcp_srtt_seconds",
                            "Smoothed round trip of live mKCP sessions (mean).",
                            labels=["role", "header"])
    for key in sorted(figures):
        count, total_sent, total_retrans, srtt_sum, sampled = figures[key]
        sessions.add_metric(list(key), count)
        sent.add_metric(list(key), total_sent)
        retrans.add_metric(list(key), total_retrans)
        loss.add_metric(list(key), total_retrans / total_sent if total_sent else 0.0)
        rtt.add_metric(list(key), srtt_sum / sampled / 1000 if sampled else 0.0)
    yield from (sessions, sent, retrans, loss, rtt)


def registry_for(stats: StatsManager, kcp: Callable[[], Any] | None = None,
                 ) -> CollectorRegistry:
    """A registry of its own (several services in one process do not collide)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TunnelCollector(stats, kcp))  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry


class _QuietSite(Site):
    """A site that writes no line per scrape."""

    noisy = False

    def log(self, request: Any) -> None:
        """No access line for scrapes."""


class MetricsService(Service):
    """Serves ``/metrics`` on ``config.listen``:``config.port``."""

    def __init__(self, config: MetricsConfig, context: Any) -> None:
        self.config = config
        self.context = context
        self.port: Any = None
        self.listening: Deferred[Any] | None = None
        self.failure: Any = None

    def startService(self) -> None:
        """Listen; a bind failure is logged and kept in ``failure``."""
        super().startService()
        root = Resource()
        kcp = getattr(self.context, "kcp_figures", None)
        root.putChild(b"metrics", MetricsResource(registry=registry_for(self.context.stats,
                                                                       kcp)))
        reactor = self.context.reactor
        listen = self.config.listen
        endpoint_class = TCP6ServerEndpoint if ":" in listen else TCP4ServerEndpoint
        endpoint = endpoint_class(reactor, self.config.port, interface=listen)
        site = _QuietSite(root)
        self.listening = endpoint.listen(site)

        def listened(port: Any) -> Any:
            self.port = port
            log.info("listening: metrics http://{listen}:{port}/metrics", listen=listen,
                     port=port.getHost().port)
            return port

        def failed(failure: Any) -> None:
            self.failure = failure
            log.error("metrics: cannot listen: {why}", why=failure.getErrorMessage())

        self.listening.addCallbacks(listened, failed)

    def stopService(self) -> Deferred[Any] | None:
        """Stop listening."""
        super().stopService()
        if self.port is not None:
            port, self.port = self.port, None
            return maybeDeferred(port.stopListening)
        return None
