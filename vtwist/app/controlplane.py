"""The ``--workers N`` supervisor's own endpoints: the gRPC API and the metrics, served from
the sum of every worker's counters (:mod:`vtwist.app.statsync`).

The API inbounds (those routing sends to ``api.tag``) listen here only: the supervisor
leaves them out of the config its workers run (:func:`worker_config`), so every API call
meets the one aggregate. The services:

* StatsService — GetStats, QueryStats (pattern, reset), GetSysStats on the aggregate: a
  reset zeroes the sum, and what workers push after it counts from zero. The sum lags the
  workers' traffic by at most :data:`~vtwist.app.statsync.INTERVAL`.
* LoggerService — RestartLogger reopens the supervisor's log files and asks every worker
  to reopen its own; the call is answered once all did (a worker that dies meanwhile opens
  them anew when it starts again).
* HandlerService — refused (FAILED_PRECONDITION, :data:`~vtwist.app.api.refused.
  HANDLER_WITH_WORKERS`): a change through the API would not survive a worker's restart and
  could leave the workers differing; the config file and a reload reach every worker.

``metrics`` listens here too; each worker counts with the hidden totals on and pushes them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from vtwist.app.api.context import ApiContext
from vtwist.app.api.setup import build_stats, restart_logger, warn_exposed
from vtwist.app.statsync import Aggregate
from vtwist.config.model import Config

log = Logger(namespace="vtwist.workers")

#: HandlerService's full gRPC name
HANDLER = "v2ray.core.app.proxyman.command.HandlerService"
#: seconds RestartLogger waits for the workers
RESTART_LOGGER_TIMEOUT = 10.0


def worker_config(raw: dict[str, Any], config: Config) -> dict[str, Any]:
    """The config the workers run: ``raw`` without the API inbounds (the supervisor's)."""
    tags = config.api_inbound_tags()
    if not tags:
        return raw
    out = copy.copy(raw)
    out["inbounds"] = [inbound for inbound in raw.get("inbounds") or []
                       if not (isinstance(inbound, dict) and inbound.get("tag") in tags)]
    return out


class ControlPlane(Service):
    """The API and metrics of ``config`` over :attr:`aggregate`.

    ``pids()``: the workers' process ids (GetSysStats); ``broadcast(op)``: ask every worker
    to do ``op``, a Deferred firing once all answered.
    """

    def __init__(self, config: Config, reactor: Any, pids: Callable[[], list[int]],
                 broadcast: Callable[[str], defer.Deferred[None]]) -> None:
        self.config = config
        self.reactor = reactor
        self.broadcast = broadcast
        stats = build_stats(config)
        self.aggregate: Aggregate | None = Aggregate(stats) if stats is not None else None
        self.context = ApiContext(reactor=reactor, stats=stats,
                                  restart_logger=self.restart_logger, processes=pids,
                                  kcp_figures=self.aggregate.kcp_figures
                                  if self.aggregate is not None else None)
        self.ports: list[Any] = []
        self.listening: list[defer.Deferred[Any]] = []
        self.metrics: Any = None

    @property
    def wanted(self) -> bool:
        """Whether there is anything to serve (api inbounds or metrics) or count."""
        return self.aggregate is not None or bool(self.config.api_inbound_tags())

    def apply(self, worker: Any, message: dict[str, Any]) -> None:
        """A worker's stats message."""
        if self.aggregate is not None:
            self.aggregate.apply(worker, message)

    def worker_gone(self, worker: Any) -> None:
        """A worker ended (its channel closed)."""
        if self.aggregate is not None:
            self.aggregate.worker_gone(worker)

    def restart_logger(self) -> defer.Deferred[None]:
        """Reopen this process's logs, then every worker's."""
        restart_logger()
        done = self.broadcast("restart_logger")
        done.addTimeout(RESTART_LOGGER_TIMEOUT, self.reactor)
        return done

    def _services(self) -> dict[str, Any]:
        from vtwist.app.api.refused import handler_with_workers
        from vtwist.app.api.services import build_services

        names = list(self.config.api.services) if self.config.api is not None else []
        services = build_services([n for n in names if n != HANDLER], self.context)
        if HANDLER in names:
            services[HANDLER] = handler_with_workers()
        return services

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        """Listen on the API inbounds' ports and the metrics port."""
        super().startService()
        from vtwist.app.api.server import GrpcServerFactory
        from vtwist.transport.stack import server_endpoint

        tags = self.config.api_inbound_tags()
        services = self._services() if tags else {}
        stats = self.context.stats
        tunnels = SimpleNamespace(clock=self.reactor, stats=stats)
        for inbound in self.config.inbounds:
            if inbound.tag not in tags:
                continue
            warn_exposed(f"the gRPC API (inbound {inbound.tag!r})", inbound.listen)
            counters = (stats.handler_counter("inbound", inbound.tag, True),
                        stats.handler_counter("inbound", inbound.tag, False)) \
                if stats is not None else (None, None)
            factory = GrpcServerFactory(tunnels, inbound.tag, services, counters)
            for port in inbound.ports:
                endpoint = server_endpoint(self.reactor, inbound.listen, port, inbound.stream)
                self.listening.append(endpoint.listen(factory).addCallback(
                    self._listened, inbound.tag, inbound.listen))
        if self.config.metrics is not None:
            from vtwist.app.metrics import MetricsService

            warn_exposed("the metrics endpoint", self.config.metrics.listen)
            self.metrics = MetricsService(self.config.metrics, self.context)
            self.metrics.startService()

    def _listened(self, port: Any, tag: str, listen: str) -> Any:
        self.ports.append(port)
        log.info("listening: the gRPC API [{tag}] on {listen}:{port} (the sum of every "
                 "worker)", tag=tag, listen=listen, port=port.getHost().port)
        return port

    def whenListening(self) -> defer.Deferred[Any]:  # noqa: N802 - Twisted style
        """Fires once every API port listens; fails with the first bind error."""
        def check(results: list[tuple[bool, Any]]) -> Any:
            for ok, value in results:
                if not ok:
                    return value
            return None

        return defer.DeferredList(list(self.listening), consumeErrors=True).addCallback(check)

    def stopService(self) -> defer.Deferred[Any]:  # noqa: N802 - Twisted's name
        """Stop listening."""
        super().stopService()
        stopping = [defer.maybeDeferred(port.stopListening) for port in self.ports]
        self.ports = []
        if self.metrics is not None:
            stopping.append(defer.maybeDeferred(self.metrics.stopService))
            self.metrics = None
        return defer.DeferredList(stopping, consumeErrors=True)
