"""Logging as V2Ray users expect it: a level for the error log, access lines apart."""

from __future__ import annotations

import re
import sys
import time
import weakref
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    globalLogBeginner,
    jsonFileLogObserver,
    textFileLogObserver,
)
from zope.interface import implementer

from vtwist.config.errors import ConfigError
from vtwist.config.model import LogConfig
from vtwist.transport.internals import at_turn_end
from vtwist.tunnel.access import send_lines_to

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warning": LogLevel.warn,
          "error": LogLevel.error}
ACCESS_NAMESPACE = "vtwist.access"


def _is_access(event: dict[str, Any]) -> bool:
    return event.get("log_namespace") == ACCESS_NAMESPACE


#: Twisted's own chatter about factories, protocols and ports: shown at debug only
#: (vtwist says ``listening: ...`` once per listener instead).
_NOISE = re.compile(r"(Starting|Stopping) (factory|protocol) |\((TCP|UDP) Port \d+ Closed\)"
                    r"|^\S+ starting on \d+$")


#: a new-style event whose format has none of these words is not noise (checked before
#: formatting it: every access line passes through here)
_NOISE_HINT = re.compile(r"actory|rotocol|Port|starting on")


def is_twisted_noise(event: dict[str, Any]) -> bool:
    """True for Twisted's factory/protocol start-stop and port open/close lines (also for
    vtwist's own factories: Twisted names its logger after the factory's class)."""
    fmt = event.get("log_format")
    if isinstance(fmt, str) and "log_text" not in event and not _NOISE_HINT.search(fmt):
        return False  # (legacy log.msg events carry their text in log_text)
    try:
        text = formatEvent(event)
    except Exception:  # noqa: BLE001 - an unformattable event is not ours to judge
        return False
    return bool(_NOISE.search(text))


#: an event key: show this info event at ``warning`` too (the ``listening:`` lines)
ALWAYS = "vtwist_always"


def quiet_twisted(loglevel: str) -> Any:
    """A predicate dropping :func:`is_twisted_noise` events unless ``loglevel`` is debug,
    and passing events marked :data:`ALWAYS` unless it is ``error`` or ``none``."""
    def predicate(event: dict[str, Any]) -> PredicateResult:
        if event.get(ALWAYS) and loglevel in ("debug", "info", "warning"):
            return PredicateResult.yes
        if loglevel != "debug" and is_twisted_noise(event):
            return PredicateResult.no
        return PredicateResult.maybe

    return predicate


@implementer(ILogObserver)
class _AccessLineObserver:
    """Writes access events as bare lines with a timestamp, like V2Ray's access log."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        #: the last second stamped and its text (a busy proxy writes many lines a second)
        self._second: int | None = None
        self._stamp = ""
        #: a flush is asked for the end of this reactor turn
        self._flushDue = False

    def __call__(self, event: dict[str, Any]) -> None:
        line = event.get("line")
        if event.get("log_format") != "{line}" or not isinstance(line, str):
            line = formatEvent(event)  # AccessLog's events carry the whole line as "line"
        when = event.get("log_time")
        self.write(line, when if when is not None else time.time())

    def write(self, line: str, when: float) -> None:
        """``line`` stamped with ``when`` (seconds since the epoch)."""
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(second))
        self.out.write(f"{self._stamp} {line}\n")
        # One flush (one write of whole lines) at the end of the reactor turn for all the
        # lines of the turn, when the reactor runs vtwist's poll loop; else now (also when
        # the reactor stopped before the turn's flush came).
        reactor = sys.modules.get("twisted.internet.reactor")
        if self._flushDue and reactor is not None and reactor.running:
            return
        if not self._flushDue and reactor is not None and at_turn_end(reactor, self._flush):
            self._flushDue = True
        else:
            self.out.flush()

    def _flush(self) -> None:
        self._flushDue = False
        out = self.out
        if not out.closed:  # (a reopen closed it, with a flush)
            out.flush()


@implementer(ILogObserver)
class _JSONLineObserver:
    """``log.format: json``: one JSON object per line (twisted.logger's JSON observer, no
    record separator) with the event's fields as keys and its formatted ``text``."""

    def __init__(self, out: IO[str]) -> None:
        self.json = jsonFileLogObserver(out, recordSeparator="")

    def __call__(self, event: dict[str, Any]) -> None:
        self.json({**event, "text": formatEvent(event)})


def _error_observer(config: LogConfig, out: IO[str]) -> ILogObserver:
    if getattr(config, "format", "text") == "json":
        return _JSONLineObserver(out)
    return textFileLogObserver(out)


def _access_observer(config: LogConfig, out: IO[str]) -> ILogObserver:
    if getattr(config, "format", "text") == "json":
        return _JSONLineObserver(out)
    return _AccessLineObserver(out)


def _open(path: str | None, stdout: IO[str] | None, key: str,
          files: list[IO[str]] | None = None) -> IO[str] | None:
    """The log file at ``path`` (appended to; kept in ``files``), else ``stdout``;
    ConfigError (naming ``log.<key>``) when it cannot be opened."""
    if not path:
        return stdout
    try:
        out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by LogSwitch
    except OSError as e:
        raise ConfigError(f"log.{key}", f"cannot open {path}: {e.strerror}") from None
    if files is not None:
        files.append(out)
    return out


def observers(config: LogConfig, stdout: IO[str] | None = sys.stdout,
              files: list[IO[str]] | None = None) -> list[ILogObserver]:
    """Observers for ``config``: the error log at its level, and the access log.

    A log without a file goes to ``stdout``; with ``stdout`` None it is left out. The files
    opened are appended to ``files``. Raises :class:`ConfigError` when a log file cannot be
    opened.
    """
    errors, access = split_observers(config, stdout, files)
    if access is None:
        return errors
    return [*errors, FilteringLogObserver(
        access, [lambda e: PredicateResult.yes if _is_access(e) else PredicateResult.no])]


def split_observers(config: LogConfig, stdout: IO[str] | None = sys.stdout,
                    files: list[IO[str]] | None = None
                    ) -> tuple[list[ILogObserver], ILogObserver | None]:
    """:func:`observers` as (the error log's observers, which drop access events; the access
    log's own observer, unfiltered, or None when it is off): :class:`LogSwitch` hands access
    events straight to the latter (two per connection) and the rest to the former."""
    result: list[ILogObserver] = []
    error_out = _open(config.error, stdout, "error", files) \
        if config.loglevel != "none" else None
    if error_out is not None:
        level = LogLevelFilterPredicate(LEVELS[config.loglevel])

        def not_access(event: dict[str, Any]) -> PredicateResult:
            return PredicateResult.no if _is_access(event) else PredicateResult.maybe

        result.append(FilteringLogObserver(_error_observer(config, error_out),
                                           [not_access, quiet_twisted(config.loglevel),
                                            level]))
    # "none" is V2Ray's way to turn the access log off.
    access_out = _open(config.access, stdout, "access", files) \
        if config.access != "none" else None
    return result, (_access_observer(config, access_out) if access_out is not None else None)


def file_observers(config: LogConfig) -> list[ILogObserver]:
    """Only the observers that write to the config's log files (twistd keeps its own stdout)."""
    return observers(config, stdout=None)


def stdout_predicate(config: LogConfig) -> Any:
    """What a stdout observer we do not own (twistd's) may print under ``config``: access
    lines unless they go to a file or are off; other events at the config's level unless
    they go to the error file."""
    level = LogLevelFilterPredicate(LEVELS.get(config.loglevel, LogLevel.critical))
    quiet = quiet_twisted(config.loglevel)

    def predicate(event: dict[str, Any]) -> PredicateResult:
        if _is_access(event):
            return PredicateResult.no if config.access else PredicateResult.yes
        if config.loglevel == "none" or config.error:
            return PredicateResult.no
        verdict = quiet(event)
        if verdict is not PredicateResult.maybe:
            return verdict
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


@implementer(ILogObserver)
class LogSwitch:
    """The observers of one ``log`` config, replaceable while running: :meth:`reopen`
    (SIGHUP, a reload, LoggerService.RestartLogger) opens the log files anew, which is what
    logrotate needs, and takes a changed ``log`` section at the same time."""

    def __init__(self, config: LogConfig, stdout: IO[str] | None = sys.stdout) -> None:
        self.config = config
        self.stdout = stdout
        self.files: list[IO[str]] = []
        self.observers, self.access = split_observers(config, stdout, self.files)
        _SWITCHES.add(self)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_namespace") == ACCESS_NAMESPACE:  # straight to the access log
            if self.access is not None:
                self.access(event)
            return
        for observer in self.observers:
            observer(event)

    def access_line(self, line: str) -> bool:
        """Write an access line at once when the access log is plain text (True); False
        otherwise (JSON, or off): the caller emits the event instead."""
        access = self.access
        if type(access) is _AccessLineObserver:
            access.write(line, time.time())
            return True
        return False

    def reopen(self, config: LogConfig | None = None) -> None:
        """Open the log files of ``config`` (default: the current one) and close the old
        ones. Raises :class:`ConfigError` (the old files stay) when one cannot be opened."""
        config = config or self.config
        files: list[IO[str]] = []
        new, access = split_observers(config, self.stdout, files)
        old, self.files = self.files, files
        self.config, self.observers, self.access = config, new, access
        for out in old:
            try:
                out.close()
            except OSError:
                pass


#: the live log switches (:func:`reopen_logs` reopens them all)
_SWITCHES: weakref.WeakSet[LogSwitch] = weakref.WeakSet()


def reopen_logs() -> None:
    """Reopen every log file this process writes (LoggerService.RestartLogger); raises
    :class:`ConfigError` when one cannot be opened (that one keeps its old files)."""
    for switch in list(_SWITCHES):
        switch.reopen()


def begin_logging(config: LogConfig, stdout: IO[str] = sys.stdout) -> LogSwitch:
    """Start global logging (for ``python -m vtwist run``; twistd has its own); returns the
    :class:`LogSwitch` that reopens the files."""
    switch = LogSwitch(config, stdout)
    globalLogBeginner.beginLoggingTo([switch], redirectStandardIO=False)
    send_lines_to(switch.access_line)  # the switch is the one observer: lines go straight
    return switch
