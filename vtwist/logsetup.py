"""Logging as V2Ray users expect it: a level for the error log, access lines apart."""

from __future__ import annotations

import sys
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

from vtwist.config.model import LogConfig

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn,
          "error": LogLevel.error}
ACCESS_NAMESPACE = "vtwist.access"


def _is_access(event: dict[str, Any]) -> bool:
    return event.get("log_namespace") == ACCESS_NAMESPACE


@implementer(ILogObserver)
class _AccessLineObserver:
    """Writes access events as bare lines with a timestamp, like V2Ray's access log."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def __call__(self, event: dict[str, Any]) -> None:
        import time

        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(event.get("log_time", 0)))
        self.out.write(f"{stamp} {formatEvent(event)}\n")
        self.out.flush()


def observers(config: LogConfig, stdout: IO[str] = sys.stdout) -> list[ILogObserver]:
    """Observers for ``config``: the error log at its level, and the access log."""
    result: list[ILogObserver] = []
    if config.loglevel != "none":
        error_out = open(config.error, "a", encoding="utf-8") if config.error else stdout  # noqa: SIM115
        level = LogLevelFilterPredicate(LEVELS[config.loglevel])

        def not_access(event: dict[str, Any]) -> PredicateResult:
            return PredicateResult.no if _is_access(event) else PredicateResult.maybe

        result.append(FilteringLogObserver(textFileLogObserver(error_out), [not_access, level]))
    if config.access == "none":  # V2Ray's way to turn the access log off
        return result
    access_out = open(config.access, "a", encoding="utf-8") if config.access else stdout  # noqa: SIM115
    result.append(FilteringLogObserver(
        _AccessLineObserver(access_out),
        [lambda e: PredicateResult.yes if _is_access(e) else PredicateResult.no]))
    return result


def file_observers(config: LogConfig) -> list[ILogObserver]:
    """Only the observers that write to the config's log files (twistd keeps its own stdout)."""
    if not (config.access or config.error):
        return []
    found = observers(config, stdout=_NullOut())
    return [o for o, to_file in zip(found, _targets(config), strict=True) if to_file]


def _targets(config: LogConfig) -> list[bool]:
    kinds = [bool(config.error)] if config.loglevel != "none" else []
    if config.access == "none":
        return kinds
    return kinds + [bool(config.access)]


class _NullOut:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def begin_logging(config: LogConfig, stdout: IO[str] = sys.stdout) -> None:
    """Start global logging (for ``python -m vtwist run``; twistd has its own)."""
    globalLogBeginner.beginLoggingTo(observers(config, stdout), redirectStandardIO=False)
