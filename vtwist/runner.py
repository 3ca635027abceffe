"""Run or check a config without twistd (``python -m vtwist run|check``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from vtwist.config.errors import ConfigError
from vtwist.config.loader import load_file, parse_config
from vtwist.config.model import Config

if TYPE_CHECKING:
    from vtwist.service import VTwistService


def default_config() -> dict[str, Any]:
    """The embedded default: SOCKS5 on 127.0.0.1:1080 (UDP on), freedom out."""
    text = resources.files("vtwist").joinpath("default_config.json").read_text("utf-8")
    return json.loads(text)


def load_config_file(path: str) -> dict[str, Any]:
    """Read a V2Ray JSON config (comments allowed). Raises :class:`ConfigError`."""
    return load_file(path)


#: how every config error the user sees begins
ERROR_PREFIX = "vtwist: config error: "
#: the warning for a config without inbounds (a misspelled ``inbounds`` usually)
NOTHING_LISTENS = ("nothing to listen on: the config has no inbounds (nor legacy inbound/"
                   "inboundDetour), so this process will serve nothing")


def validate(config: dict[str, Any], err: Any = None) -> Config | None:
    """Parse ``config``; print warnings and the error (no traceback). None when invalid."""
    err = err or sys.stderr

    def warn(message: str) -> None:
        print(f"warning: {message}", file=err)

    try:
        parsed = parse_config(config, warn)
    except ConfigError as e:
        print(f"{ERROR_PREFIX}{e}", file=err)
        return None
    if not parsed.inbounds and not (parsed.reverse and parsed.reverse.bridges):
        warn(NOTHING_LISTENS)  # a reverse bridge serves without inbounds
    return parsed


def build(config: dict[str, Any]) -> VTwistService | None:
    """Validate ``config`` and build its service on the global reactor (not started).

    None, after printing why (no traceback), when the config is invalid.
    """
    parsed = validate(config)
    if parsed is None:
        return None
    from twisted.internet import reactor

    from vtwist.service import build_service

    try:
        return build_service(parsed, reactor)
    except ConfigError as e:
        print(f"{ERROR_PREFIX}{e}", file=sys.stderr)
        return None


def check_config(config: dict[str, Any]) -> int:
    """Validate like ``v2ray -test``: 0 when valid, 1 otherwise."""
    service = build(config)
    if service is None:
        return 1
    count = len(service.config.warnings) + (not service.config.inbounds)
    print("Configuration OK." if not count else
          f"Configuration OK, with {count} warning{'s' if count > 1 else ''} (above).")
    return 0


def run_config(config: dict[str, Any], load: Callable[[], Any] | None = None,
               pidfile: str | None = None) -> int:
    """Run ``config`` until SIGINT/SIGTERM; returns the exit status. SIGHUP reloads from
    ``load()`` (the same source read again; default: ``config`` as it was) and reopens the
    log files. ``pidfile``: where the process id goes (``vtwist reload`` reads it)."""
    from vtwist.app.worker import log_open_files_limit, worker_from_environment

    worker = worker_from_environment()  # one of --workers N: shared ports and replay tables
    service = build(config)
    if service is None:
        return 1
    from twisted.internet import reactor

    stop_on_early_signals(reactor)

    from vtwist.app.reload import Reloader, install_reload_signal
    from vtwist.logsetup import begin_logging

    try:
        service.logs = begin_logging(service.config.log)
    except ConfigError as e:
        print(f"{ERROR_PREFIX}{e}", file=sys.stderr)
        return 1
    log_open_files_limit()
    service.reloader = Reloader(service, load or (lambda: config))
    install_reload_signal(service.reloader, reactor)
    if pidfile:
        _write_pidfile(pidfile, reactor)
    service.startService()
    service.stopReactorIfUnbound()
    if worker is not None:
        worker.started(service, reactor)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    from vtwist.transport.internals import lean_poll

    lean_poll(reactor)  # readiness handlers called directly, not in a log context each
    reactor.run()  # its own SIGINT/SIGTERM handlers stop it
    return 1 if service.failed else 0


def stop_on_early_signals(reactor: Any) -> None:
    """SIGINT/SIGTERM before the reactor runs (while the ports open) stop it once it runs.

    Python's default SIGINT raises KeyboardInterrupt wherever the process is, and a Deferred
    callback opening a port turns that into a logged failure: the process would go on.
    ``reactor.run`` installs Twisted's own handlers over these."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        reactor.callWhenRunning(reactor.stop)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def _write_pidfile(path: str, reactor: Any) -> None:
    """Write this process's id to ``path``; removed when the reactor stops."""
    import os

    with open(path, "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")

    def remove() -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

    reactor.addSystemEventTrigger("after", "shutdown", remove)
