"""The operator's side of a running service: counters (``stats``), the gRPC API (``api``)
and the Prometheus exporter (``metrics``), wired into :class:`vtwist.service.VTwistService`.

As in V2Ray, the API is served on the inbounds that routing sends to ``api.tag``
(``{"inboundTag": ["api"], "outboundTag": "api"}``, usually a dokodemo-door inbound): those
inbounds listen with the gRPC server instead of their protocol.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

from vtwist.app.api.context import ApiContext
from vtwist.app.api.services import build_services
from vtwist.config.model import Config, InboundConfig
from vtwist.tunnel.stats import StatsManager

log = Logger(namespace="vtwist.app.api")


def is_loopback(listen: str) -> bool:
    """Whether ``listen`` (an address, or a UNIX socket path) is reachable from this host
    only."""
    if listen.startswith(("/", "@")):
        return True
    try:
        return ipaddress.ip_address(listen).is_loopback
    except ValueError:
        return listen == "localhost"


def warn_exposed(what: str, listen: str) -> bool:
    """Log a warning when an unauthenticated endpoint listens beyond loopback; True if so."""
    if is_loopback(listen):
        return False
    log.warn("{what} listens on {listen} without authentication: anyone who reaches it "
             "can use it (listen on 127.0.0.1, or firewall it)", what=what, listen=listen)
    return True


def build_stats(config: Config) -> StatsManager | None:
    """The counters ``config`` asks for (``stats`` and/or ``metrics``), or None."""
    if not config.stats and config.metrics is None:
        return None
    stats = StatsManager(config.policy.system, counters=config.stats,
                         metrics=config.metrics is not None)
    for inbound in config.inbounds:
        stats.register_handler("inbound", inbound.tag)
    for outbound in config.outbounds:
        stats.register_handler("outbound", outbound.tag)
    return stats


def restart_logger() -> None:
    """Reopen the log files, when the logging setup offers it (``logsetup.reopen_logs``)."""
    from vtwist import logsetup

    reopen = getattr(logsetup, "reopen_logs", None)
    if reopen is not None:
        reopen()


class Operations:
    """Builds the API's services and factory and the metrics service for one
    :class:`~vtwist.service.VTwistService`."""

    def __init__(self, config: Config, service: Any, build: Any) -> None:
        self.config = config
        self.context = ApiContext(
            reactor=service.reactor, service=service, tunnels=service.tunnels, build=build,
            dispatcher=service.dispatcher, stats=service.tunnels.stats,
            restart_logger=restart_logger)
        self.api_tags = config.api_inbound_tags()
        self.services: dict[str, Any] | None = None

    def api_factory(self, inbound: InboundConfig) -> Any | None:
        """The gRPC server factory for an inbound routed to the API, else None."""
        if inbound.tag not in self.api_tags or self.config.api is None:
            return None
        from vtwist.app.api.server import GrpcServerFactory

        warn_exposed(f"the gRPC API (inbound {inbound.tag!r})", inbound.listen)
        if self.services is None:
            self.services = build_services(self.config.api.services, self.context)
        stats = self.context.stats
        counters = (stats.handler_counter("inbound", inbound.tag, True),
                    stats.handler_counter("inbound", inbound.tag, False)) \
            if stats is not None else (None, None)
        return GrpcServerFactory(self.context.tunnels, inbound.tag, self.services, counters)

    def extra_services(self) -> list[Service]:
        """Services beside the inbounds: the metrics HTTP endpoint (not in a worker of
        ``--workers N``: its supervisor serves the sum, :mod:`vtwist.app.controlplane`)."""
        from vtwist.app.worker import current

        if self.config.metrics is None or current() is not None:
            return []
        from vtwist.app.metrics import MetricsService

        warn_exposed("the metrics endpoint", self.config.metrics.listen)
        return [MetricsService(self.config.metrics, self.context)]
