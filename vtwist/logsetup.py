"""Logging as V2Ray users expect it: a level for the error log, access lines apart."""

from __future__ import annotations

import sys
import time
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

from vtwist.config.errors import ConfigError
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
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(event.get("log_time", 0)))
        self.out.write(f"{stamp} {formatEvent(event)}\n")
        self.out.flush()


def _open(path: str | None, stdout: IO[str] | None, key: str) -> IO[str] | None:
    """The log file at ``path`` (appended to), else ``stdout``; ConfigError (naming
    ``log.<key>``) when it cannot be opened."""
    if not path:
        return stdout
    try:
        return open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
    except OSError as e:
        raise ConfigError(f"log.{key}", f"cannot open {path}: {e.strerror}") from None


def observers(config: LogConfig, stdout: IO[str] | None = sys.stdout) -> list[ILogObserver]:
    """Observers for ``config``: the error log at its level, and the access log.

    A log without a file goes to ``stdout``; with ``stdout`` None it is left out. Raises
    :class:`ConfigError` when a log file cannot be opened.
    """
    result: list[ILogObserver] = []
    error_out = _open(config.error, stdout, "error") if config.loglevel != "none" else None
    if error_out is not None:
        level = LogLevelFilterPredicate(LEVELS[config.loglevel])

        def not_access(event: dict[str, Any]) -> PredicateResult:
            return PredicateResult.no if _is_access(event) else PredicateResult.maybe

        result.append(FilteringLogObserver(textFileLogObserver(error_out), [not_access, level]))
    # "none" is V2Ray's way to turn the access log off.
    access_out = _open(config.access, stdout, "access") if config.access != "none" else None
    if access_out is not None:
        result.append(FilteringLogObserver(
            _AccessLineObserver(access_out),
            [lambda e: PredicateResult.yes if _is_access(e) else PredicateResult.no]))
    return result


def file_observers(config: LogConfig) -> list[ILogObserver]:
    """Only the observers that write to the config's log files (twistd keeps its own stdout)."""
    return observers(config, stdout=None)


def stdout_predicate(config: LogConfig) -> Any:
    """What a stdout observer we do not own (twistd's) may print under ``config``: access
    lines unless they go to a file or are off; other events at the config's level unless
    they go to the error file."""
    level = LogLevelFilterPredicate(LEVELS.get(config.loglevel, LogLevel.critical))

    def predicate(event: dict[str, Any]) -> PredicateResult:
        if _is_access(event):
            return PredicateResult.no if config.access else PredicateResult.yes
        if config.loglevel == "none" or config.error:
            return PredicateResult.no
        return level(event)

    return predicate


def filter_next_observers(config: LogConfig, beginner: Any = globalLogBeginner) -> None:
    """Make the observers the next ``beginLoggingTo`` installs (twistd's, which starts logging
    after building our service) honour ``config``'s level and access settings."""
    original = beginner.beginLoggingTo
    predicate = stdout_predicate(config)

    def begin(observers: Any, *args: Any, **kwargs: Any) -> Any:
        del beginner.beginLoggingTo  # one-shot: back to the class's method
        wrapped = [FilteringLogObserver(o, [predicate]) for o in observers]
        return original(wrapped, *args, **kwargs)

    beginner.beginLoggingTo = begin  # type: ignore[method-assign]


def begin_logging(config: LogConfig, stdout: IO[str] = sys.stdout) -> None:
    """Start global logging (for ``python -m vtwist run``; twistd has its own)."""
    globalLogBeginner.beginLoggingTo(observers(config, stdout), redirectStandardIO=False)
