"""The ``twistd vtwist`` plugin: options and the service maker."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from vtwist.config.errors import ConfigError


class Options(usage.Options):
    """twistd vtwist [--config FILE | --link LINK | --subscription FILE] [--test]."""

    synopsis = "[--config FILE | --link LINK | --subscription FILE [--pick NAME]] [--test]"
    optParameters = [
        ["config", "c", None, "V2Ray JSON config file (default: SOCKS5 on 127.0.0.1:1080, direct)"],
        ["link", "l", None, "a vmess://, vless://, trojan:// or ss:// share link to use as "
                            "the outbound"],
        ["subscription", None, None, "a subscription file (base64 list of links)"],
        ["pick", None, None, "with --subscription: the link whose name (ps) this is"],
        ["socks", None, None, "with --link/--subscription: SOCKS5 listen address "
                              "[default: 127.0.0.1:1080]"],
        ["mux", None, None, "with --link/--subscription: Mux.Cool on the (vmess or vless) "
                            "outbound, N sessions per connection (1-1024)"],
        ["loglevel", None, None, "override the config's log.loglevel: debug, info, warning, "
                                 "error or none (generated configs use info)"],
        ["assets", None, None, "look for geoip.dat, geosite.dat and ext: files in this "
                               "directory first"],
        ["workers", None, "1", "run N processes that share the listening ports "
                               "(SO_REUSEPORT) under this one; auto = the CPU count"],
    ]
    optFlags = [["test", "t", "validate the config and exit 0 (valid) or 1, like v2ray -test"],
                ["verbose", "v", "the same as --loglevel debug"]]

    def postOptions(self) -> None:
        """Only one config source at a time; --pick only with --subscription."""
        sources = [k for k in ("config", "link", "subscription") if self[k]]
        if len(sources) > 1:
            raise usage.UsageError("use only one of --config, --link, --subscription")
        if self["pick"] is not None and not self["subscription"]:
            raise usage.UsageError("--pick goes with --subscription")
        if self["socks"] is not None and not (self["link"] or self["subscription"]):
            raise usage.UsageError("--socks goes with --link or --subscription (a config "
                                   "names its inbounds)")
        if self["mux"] is not None:
            if not (self["link"] or self["subscription"]):
                raise usage.UsageError("--mux goes with --link or --subscription (a config "
                                       "sets its own mux)")
            if not str(self["mux"]).isdigit() or not 1 <= int(self["mux"]) <= 1024:
                raise usage.UsageError(f"--mux: expected 1-1024, got {self['mux']!r}")
            self["mux"] = int(self["mux"])
        from vtwist.cli import LOGLEVELS

        if self["loglevel"] is not None and self["loglevel"] not in LOGLEVELS:
            raise usage.UsageError(f"--loglevel: expected one of {', '.join(LOGLEVELS)}, "
                                   f"got {self['loglevel']!r}")
        if self["verbose"]:
            self["loglevel"] = "debug"
        from vtwist.app.workers import parse_workers

        try:
            self["workers"] = parse_workers(self["workers"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        if self["assets"]:
            from vtwist.routing.geodata.assets import add_asset_dir

            add_asset_dir(self["assets"])


def config_from_options(options: Options) -> dict[str, Any]:
    """The config dict the options describe (``--loglevel`` applied)."""
    from vtwist.cli import with_loglevel

    return with_loglevel(_config(options), options["loglevel"])


def _config(options: Options) -> dict[str, Any]:
    from vtwist import runner

    socks = options["socks"] or "127.0.0.1:1080"
    if options["config"]:
        return runner.load_config_file(options["config"])
    if options["link"]:
        from vtwist.genconfig import client_config_from_link

        return client_config_from_link(options["link"], socks=socks, mux=options["mux"])
    if options["subscription"]:
        from vtwist.genconfig import client_config_from_subscription

        with open(options["subscription"], encoding="utf-8") as f:
            text = f.read()
        return client_config_from_subscription(text, options["pick"], socks=socks,
                                               mux=options["mux"])
    return runner.default_config()


def makeService(options: Options) -> Any:
    """Build the service tree, or validate and exit with ``--test``."""
    from vtwist import runner

    try:
        config = config_from_options(options)
    except (ConfigError, ValueError, OSError) as e:
        print(f"vtwist: config error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    if options["test"]:
        raise SystemExit(runner.check_config(config))
    from vtwist.app.workers import parse_workers

    if parse_workers(options["workers"]) > 1:  # an int after postOptions; "1" when unparsed
        return _supervisor(options, config)
    from twisted.internet import reactor

    runner.stop_on_early_signals(reactor)  # twistd opens the ports before the reactor runs
    service = runner.build(config)
    if service is None:
        raise SystemExit(1)
    service.stopReactorIfUnbound()  # twistd starts the service before the reactor
    _exit_1_if_failed(service)
    from vtwist.app.worker import log_open_files_limit

    log_open_files_limit()
    from twisted.logger import globalLogPublisher

    from vtwist.app.reload import Reloader, install_reload_signal
    from vtwist.logsetup import LogSwitch, filter_next_observers
    from vtwist.tunnel.access import send_lines_to

    try:
        service.logs = LogSwitch(service.config.log, stdout=None)  # twistd logs the rest
    except ConfigError as e:
        print(f"vtwist: config error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    globalLogPublisher.addObserver(service.logs)
    filter_next_observers(service.config.log)  # twistd's stdout follows loglevel/access too
    # access lines to a file: the switch writes them; twistd's observers drop them anyway
    send_lines_to(service.logs.access_line)
    # SIGHUP: read the same source again and apply the difference (vtwist reload)
    service.reloader = Reloader(service, lambda: config_from_options(options))
    install_reload_signal(service.reloader, reactor)
    from vtwist.transport.internals import lean_poll

    lean_poll(reactor)  # readiness handlers called directly, not in a log context each
    return service


def _supervisor(options: Options, config: dict[str, Any]) -> Any:
    """``--workers N``: the supervisor as twistd's service (vtwist.app.workers)."""
    from twisted.internet import reactor

    from vtwist.app import workers

    if not workers.prepare(config):
        raise SystemExit(1)
    workers.log_open_files_limit()
    supervisor = workers.Supervisor(config, workers.parse_workers(options["workers"]), reactor,
                                    lambda: config_from_options(options), options["assets"])
    workers.install_reload_signal(supervisor, reactor)
    _exit_1_if_failed(supervisor)
    return supervisor


def _exit_1_if_failed(service: Any) -> None:
    """twistd has no exit status of its own: when an inbound could not listen, end the
    process with status 1 once twistd is done (pid file removed, logs flushed), as
    ``python -m vtwist run`` does."""
    import atexit
    import os

    def check() -> None:
        if service.failed:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(1)

    atexit.register(check)
