"""``v2ray.core.app.stats.command.StatsService``: GetStats, QueryStats, GetSysStats."""

from __future__ import annotations

import gc
import resource
import sys
from typing import Any

from vtwist.app.api.errors import GrpcError, Status, decode
from vtwist.app.api.v2raypb import app_stats_command_command_pb2 as pb

#: how V2Ray 4.34 words a missing counter (grpc-go turns its plain error into UNKNOWN)
NOT_FOUND = "v2ray.com/core/app/stats/command: {name} not found."


class StatsService:
    """Reads the tunnel service's :class:`~vtwist.tunnel.stats.StatsManager`."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.methods = {"GetStats": self.GetStats, "QueryStats": self.QueryStats,
                        "GetSysStats": self.GetSysStats}

    def _stats(self) -> Any:
        stats = self.context.stats
        if stats is None or not stats.enabled:
            raise GrpcError(Status.UNAVAILABLE, "stats are off (add \"stats\": {} to the config)")
        return stats

    def GetStats(self, data: bytes) -> bytes:
        """One counter by name (``reset`` zeroes it after reading)."""
        request = decode(pb.GetStatsRequest, data)
        value = self._stats().get(request.name, request.reset)
        if value is None:
            raise GrpcError(Status.UNKNOWN, NOT_FOUND.format(name=request.name))
        return pb.GetStatsResponse(stat=pb.Stat(name=request.name, value=value)) \
            .SerializeToString()

    def QueryStats(self, data: bytes) -> bytes:
        """Every counter whose name contains ``pattern``."""
        request = decode(pb.QueryStatsRequest, data)
        found = self._stats().query(request.pattern, request.reset)
        return pb.QueryStatsResponse(stat=[pb.Stat(name=n, value=v) for n, v in found]) \
            .SerializeToString()

    def GetSysStats(self, data: bytes) -> bytes:
        """Uptime and vtwist's own figures in V2Ray's fields: ``NumGoroutine`` is the number
        of open connections and UDP sessions, ``Sys`` and ``Alloc`` the process's peak
        resident memory in bytes, ``NumGC`` the garbage collector's runs, ``LiveObjects``
        the interpreter's allocated memory blocks (cheap to read: no walk over objects).
        With ``--workers N`` (the supervisor answers) ``Alloc`` and ``Sys`` add the
        workers' resident memory now and at its peak; the rest is the supervisor's."""
        decode(pb.SysStatsRequest, data)
        stats = self.context.stats
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        processes = getattr(self.context, "processes", None)
        if processes is not None:
            pids = processes()
            return pb.SysStatsResponse(
                Uptime=int(self.context.uptime()),
                NumGoroutine=stats.active if stats is not None else 0,
                NumGC=sum(s["collections"] for s in gc.get_stats()),
                Alloc=(current_rss() or rss) + sum(process_rss(pid)[0] for pid in pids),
                Sys=rss + sum(process_rss(pid)[1] for pid in pids),
                LiveObjects=sys.getallocatedblocks(),
            ).SerializeToString()
        return pb.SysStatsResponse(
            Uptime=int(self.context.uptime()),
            NumGoroutine=stats.active if stats is not None else 0,
            NumGC=sum(s["collections"] for s in gc.get_stats()),
            Alloc=current_rss() or rss, Sys=rss,
            LiveObjects=sys.getallocatedblocks(),
        ).SerializeToString()


def current_rss() -> int:
    """The process's resident memory now, in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def process_rss(pid: int) -> tuple[int, int]:
    """Process ``pid``'s resident memory now and at its peak, in bytes ((0, 0) when it
    is gone or /proc is missing)."""
    now = peak = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    now = int(line.split()[1]) * 1024
                elif line.startswith(b"VmHWM:"):
                    peak = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return now, peak


def build(context: Any) -> StatsService:
    """The service for the API's registry."""
    return StatsService(context)
