"""What a gRPC service's ``build(context)`` gets: :class:`ApiContext`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiContext:
    """The running service, as the API's services see it.

    * ``reactor`` — the reactor (also a clock);
    * ``service`` — the :class:`vtwist.service.VTwistService` (its ``config``,
      ``inbound_services``, ``dispatcher``; hot reload and HandlerService add their own
      methods there);
    * ``tunnels`` — the :class:`vtwist.tunnel.service.TunnelService` every connection goes
      through (``tunnels.stats``, ``tunnels.access``, ``tunnels.dispatcher``);
    * ``build`` — the :class:`vtwist.tunnel.inbound.BuildContext` inbounds and outbounds were
      built with (``build.outbounds`` by tag, ``build.inbounds`` by tag, ``build.policy``,
      ``build.dialer(outbound_config)``);
    * ``dispatcher`` — the :class:`vtwist.tunnel.dispatcher.Dispatcher` (``outbounds``,
      ``by_tag``: the outbound manager);
    * ``stats`` — the :class:`vtwist.tunnel.stats.StatsManager`, None without ``"stats"``;
    * ``restart_logger`` — reopens the log files (LoggerService.RestartLogger);
    * ``started`` — ``time.monotonic()`` when the service was built (uptime);
    * ``processes`` — with ``--workers N``, the workers' process ids (GetSysStats adds their
      memory to the supervisor's); None in a single process;
    * ``kcp_figures`` — with ``--workers N``, the workers' summed mKCP census for the
      metrics (:meth:`vtwist.app.statsync.Aggregate.kcp_figures`); None: this process's.

    ``restart_logger`` may return a Deferred (the supervisor waits for its workers).
    """

    reactor: Any
    service: Any = None
    tunnels: Any = None
    build: Any = None
    dispatcher: Any = None
    stats: Any = None
    restart_logger: Callable[[], Any] = lambda: None
    started: float = field(default_factory=time.monotonic)
    processes: Callable[[], list[int]] | None = None
    kcp_figures: Callable[[], Any] | None = None

    def uptime(self) -> float:
        """Seconds since the service was built."""
        return time.monotonic() - self.started
