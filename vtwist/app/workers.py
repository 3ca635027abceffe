"""``--workers N``: one supervising process and N worker processes that share the ports.

The supervisor validates the config (a bad config fails before any worker starts), writes
it to a private file, creates the shared replay tables (:mod:`vtwist.proxy.sharedreplay`) in
a ``memfd`` and starts each worker as ``python -m vtwist run --config FILE`` with the
mapping on fd 3, a readiness pipe on fd 4, its control channel (:mod:`vtwist.app.control`)
on fd 5 and :data:`ENV` naming its index. Re-executing
(rather than forking) keeps each worker's reactor its own and works the same under
``python -m vtwist run`` and ``twistd`` (the supervisor is a plain Twisted service).

A worker (:mod:`vtwist.app.worker`) binds every listener with ``SO_REUSEPORT``,
uses the shared replay tables, dies with its supervisor (``PR_SET_PDEATHSIG``), ignores
SIGINT (a Ctrl-C reaches the whole process group: the supervisor decides) and writes
``ready`` on fd 4 once all its inbounds listen.

The supervisor: SIGTERM/SIGINT stop every worker (SIGTERM, then SIGKILL after
:data:`STOP_TIMEOUT`; a worker drains first: it stops accepting and lets its connections
finish for up to :data:`~vtwist.app.drain.DRAIN_TIMEOUT`, see :mod:`vtwist.app.drain`);
SIGHUP reads the config source again, validates it, rewrites the file and passes SIGHUP to
every worker (each reloads it); a worker that exits before it is ready, or is not ready
within :data:`START_TIMEOUT`, stops them all with exit status 1; a worker that dies later is
started again after :data:`RESTART_DELAY` (only its own connections are lost). Workers share
stdout/stderr and append to the same log files, so logs come out as one stream.

Stats, the API and metrics: each worker counts its own connections and pushes what it
counted over its control channel every :data:`~vtwist.app.statsync.INTERVAL` seconds and
when it stops; the supervisor sums them and serves the gRPC API (its inbounds listen in the
supervisor only) and the metrics endpoint from the sum (:mod:`vtwist.app.controlplane`). So
a query lags the traffic by at most that interval, and a worker killed with SIGKILL loses
at most its last interval of counts (what it pushed before stays). The API's HandlerService
is refused with workers (see the control plane); RestartLogger reaches every worker.

UNIX socket listeners (``"network": "domainsocket"``, or a ``listen`` of ``/path``,
``@name`` or ``@@name``): a socket path has one owner, so the supervisor binds each one itself
before any worker starts (:func:`vtwist.transport.domainsocket.endpoints.hold`: the
single-process rules, the ``.lock`` file, a stale socket replaced, mode 0666; one that
cannot listen stops the start with status 1) and passes them to every worker it starts or
restarts, on fds :data:`~vtwist.app.worker.FIRST_UNIX_FD`, ... with
:data:`~vtwist.app.worker.UNIX_FDS_ENV` mapping each socket address to its fd; the worker
adopts the socket at that address instead of binding it, and the kernel hands each
connection to one of the workers accepting on it. The supervisor removes a file socket (and
its lock) when it stops, after its workers; a worker never does. A reload that adds,
removes or moves a UNIX listener is refused (one error line; the running config stays):
restart for that. Other changes to those inbounds reload as usual (the workers adopt the
same sockets again).

UDP sockets (mKCP, QUIC, dokodemo-door and Shadowsocks UDP): the kernel hashes UDP flows
over the sockets in the port's group at the moment, so the supervisor binds them, one per
worker index, when the first worker asks, and keeps them (:mod:`vtwist.app.udpslots`): a
worker that dies takes only its own flows with it (they wait in its socket until it is
back), and no other worker's mKCP or QUIC session moves.

Limits: a worker that keeps dying
is restarted at most :data:`MAX_RESTARTS` times in :data:`RESTART_WINDOW` seconds, then the
supervisor stops with status 1. Config warnings are printed by every worker.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.app import control, udpslots
from vtwist.app.worker import (
    ENV,
    FIRST_UNIX_FD,
    READY_FD,
    TABLES_FD,
    UNIX_FDS_ENV,
    log_open_files_limit,
)
from vtwist.proxy import sharedreplay

log = Logger()
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

STOP_TIMEOUT = 10.0
#: a worker not listening this many seconds after the start is a failed start
START_TIMEOUT = 120.0
RESTART_DELAY = 1.0
#: more restarts than this within RESTART_WINDOW seconds: give up (a crash loop)
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


def parse_workers(text: str | int) -> int:
    """``auto`` (the CPU count) or a positive integer. Raises ValueError."""
    if str(text).strip().lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else (os.cpu_count() or 1))
    try:
        count = int(text)
    except ValueError:
        raise ValueError(f"--workers: expected a number or auto, got {text!r}") from None
    if count < 1:
        raise ValueError(f"--workers: expected at least 1, got {count}")
    return count


def unix_listeners(config: dict[str, Any]) -> list[str]:
    """The UNIX socket addresses the workers of ``config`` (a valid raw config) listen on,
    in inbound order: the sockets the supervisor binds for them (the API inbounds are the
    supervisor's own and listen there as in one process; an inbound whose ``network`` leaves
    tcp out, dokodemo-door or Shadowsocks, has no stream listener: one process warns and
    binds nothing, and so does the supervisor)."""
    from vtwist.app.controlplane import worker_config
    from vtwist.config.loader import parse_config
    from vtwist.transport.domainsocket.settings import inbound_address

    parsed = parse_config(config, lambda _: None)
    parsed = parse_config(worker_config(config, parsed), lambda _: None)
    found = (inbound_address(i.listen, i.stream) for i in parsed.inbounds
             if "tcp" in getattr(i.settings, "networks", ("tcp",)))
    return [address for address in found if address is not None]


# -- the supervisor --------------------------------------------------------------------------
class _WorkerProcess(ProcessProtocol):
    """One worker as the supervisor sees it."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ready = False
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.pid: int | None = None
        #: the supervisor's end of its control channel (a SupervisorChannel)
        self.channel: Any = None

    def connectionMade(self) -> None:  # noqa: N802 - Twisted's name
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:  # noqa: N802, N803
        if childFD == READY_FD and b"ready" in data and not self.ready:
            self.ready = True
            self.supervisor.worker_ready(self)

    def processEnded(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        try:
            self.supervisor.worker_ended(self, reason.value)
        finally:  # stopService waits on this: it must fire whatever happened above
            self.ended.callback(None)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the worker if it still runs."""
        try:
            self.transport.signalProcess(signum)  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - ProcessExitedAlready
            pass


class Supervisor(Service):
    """Runs ``config`` in ``workers`` processes that share its ports (see the module doc).

    ``load``: reads the config source again for a reload (default: ``config`` unchanged).
    ``assets``: the ``--assets`` directory the workers get. :attr:`failed` is True when a
    worker could not start; :meth:`whenReady` fires once every worker listens.
    """

    def __init__(self, config: dict[str, Any], workers: int, reactor: Any = None,
                 load: Callable[[], dict[str, Any]] | None = None,
                 assets: str | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self.config = config
        self.count = workers
        self.reactor = reactor
        self.load = load or (lambda: config)
        self.assets = assets
        self.failed = False
        self.stopping = False
        self.workers: list[_WorkerProcess | None] = [None] * workers
        self._ready: defer.Deferred[None] = defer.Deferred()
        self._ready.addErrback(lambda _: None)
        self._waiters: list[defer.Deferred[None]] = []
        self._restarts: list[float] = []
        self._start_timer: Any = None
        self._dir: str | None = None
        self._tables_fd: int | None = None
        self._null_fd: int | None = None
        #: the UNIX listening sockets the workers share: socket address -> held port
        self.unix_ports: dict[str, Any] = {}
        #: the workers' UDP sockets, held here so a worker's restart moves no other flows
        self.udp_slots = udpslots.UDPSlots(reactor, workers)
        #: the API and metrics over the workers' summed counters (None: neither)
        self.control: Any = None

    # setup
    def _write_config(self, config: dict[str, Any]) -> None:
        """Write what the workers run: ``config`` without the API inbounds (the
        supervisor's own)."""
        from vtwist.app.controlplane import worker_config
        from vtwist.config.loader import parse_config

        assert self._dir is not None
        config = worker_config(config, parse_config(config, lambda _: None))
        path = os.path.join(self._dir, "config.json")
        fd, tmp = tempfile.mkstemp(dir=self._dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(config, f)
        os.replace(tmp, path)

    @property
    def config_path(self) -> str:
        """The private copy of the config every worker runs."""
        assert self._dir is not None
        return os.path.join(self._dir, "config.json")

    def _make_tables(self) -> int:
        size = sharedreplay.mapping_size()
        fd = os.memfd_create("vtwist-replay")
        os.ftruncate(fd, size)
        mapping = mmap.mmap(fd, size)
        now = self.reactor.seconds()
        for table in sharedreplay.layout(mapping).values():
            table.initialize(secrets.token_bytes(16), now)
            table.release()
        mapping.close()
        return fd

    def startService(self) -> None:  # noqa: N802 - Twisted's name
        """Write the config, create the shared tables, listen for the API and metrics and
        start every worker."""
        super().startService()
        self._dir = tempfile.mkdtemp(prefix="vtwist-workers-")
        self._write_config(self.config)
        self._tables_fd = self._make_tables()
        self._null_fd = os.open(os.devnull, os.O_RDONLY)
        if not self._hold_unix():
            return
        self._start_control()
        for index in range(self.count):
            self._spawn(index)
        self._start_timer = self.reactor.callLater(START_TIMEOUT, self._too_slow)

    def _too_slow(self) -> None:
        """Not every worker listens after :data:`START_TIMEOUT`: a failed start."""
        self._start_timer = None
        slow = [w.index for w in self.workers if w is not None and not w.ready]
        if not slow or self.stopping:
            return
        log.error("workers {slow} not listening after {timeout:.0f} s: stopping",
                  slow=slow, timeout=START_TIMEOUT)
        self.failed = True
        self._stop_reactor()

    def _hold_unix(self) -> bool:
        """Bind the workers' UNIX listening sockets (False: one cannot listen, a failed
        start)."""
        from twisted.internet.error import CannotListenError

        from vtwist.transport.domainsocket.endpoints import hold
        from vtwist.transport.domainsocket.settings import describe

        for address in unix_listeners(self.config):
            try:
                self.unix_ports[address] = hold(self.reactor, address)
            except CannotListenError as e:
                log.error("cannot listen on the UNIX socket {address}: {why}; stopping",
                          address=describe(address), why=e.socketError)
                self.failed = True
                self._not_ready(RuntimeError(f"cannot listen on {describe(address)}"))
                self.reactor.callWhenRunning(self._stop_reactor)  # twistd: not running yet
                return False
        return True

    def _unix_fds(self) -> tuple[dict[int, int], str]:
        """The UNIX sockets as a worker gets them: its fds -> ours, and
        :data:`~vtwist.app.worker.UNIX_FDS_ENV`'s value."""
        child_fds, table = {}, {}
        for n, (address, port) in enumerate(self.unix_ports.items()):
            child_fds[FIRST_UNIX_FD + n] = port.fileno()
            table[address] = FIRST_UNIX_FD + n
        return child_fds, json.dumps(table)

    def _start_control(self) -> None:
        """The gRPC API and metrics endpoint, when the config has them; an API port that
        cannot listen is a failed start."""
        from vtwist.app.controlplane import ControlPlane
        from vtwist.config.loader import parse_config

        control = ControlPlane(parse_config(self.config, lambda _: None), self.reactor,
                               self.pids, self.broadcast)
        if not control.wanted:
            return
        self.control = control
        control.startService()

        def failed(failure: Failure) -> None:
            log.error("the gRPC API cannot listen: {why}; stopping",
                      why=failure.getErrorMessage())
            self.failed = True
            self.reactor.callWhenRunning(self._stop_reactor)  # twistd: not running yet

        control.whenListening().addErrback(failed)

    def broadcast(self, op: str) -> defer.Deferred[None]:
        """Ask every running worker to do ``op`` (control channel); fires when all have
        answered, fails with the first error a worker answered (a worker that ended
        meanwhile counts as done: it starts again with the config as it is)."""
        def answered(failure: Failure, index: int) -> None:
            if failure.check(control.ChannelClosed):
                return None
            raise RuntimeError(f"worker {index}: {failure.getErrorMessage()}")

        calls = [w.channel.request(op).addErrback(answered, w.index)
                 for w in self.workers if w is not None and w.channel is not None
                 and not w.channel.gone]
        done = defer.gatherResults(calls, consumeErrors=True)

        def first(failure: Failure) -> Failure:
            return failure.value.subFailure \
                if isinstance(failure.value, defer.FirstError) else failure

        return done.addCallbacks(lambda _: None, first)

    def _spawn(self, index: int) -> None:
        argv = [sys.executable, "-m", "vtwist", "run", "--config", self.config_path]
        if self.assets:
            argv += ["--assets", self.assets]
        env = dict(os.environ)
        env[ENV] = f"{index}/{self.count}/{os.getpid()}"
        unix_fds, env[UNIX_FDS_ENV] = self._unix_fds()
        # the workers import this same vtwist (also when it is not installed)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT,
                                                          env.get("PYTHONPATH")]))
        worker = _WorkerProcess(self, index)
        self.workers[index] = worker
        mine, theirs = control.socket_pair()
        slots = self.udp_slots.channel(index)
        try:
            self.reactor.spawnProcess(
                worker, sys.executable, argv, env=env,
                childFDs={0: self._null_fd, 1: 1, 2: 2, TABLES_FD: self._tables_fd,
                          READY_FD: "r", control.CONTROL_FD: theirs.fileno(),
                          udpslots.SLOTS_FD: slots.fileno(), **unix_fds})
        except BaseException:
            mine.close()
            self.udp_slots.drop_channel(index)
            raise
        finally:
            theirs.close()
            slots.close()
        key = object()  # this process of worker ``index`` (a restart is another)

        def message(data: dict[str, Any]) -> None:
            if self.control is not None and isinstance(data.get("stats"), dict):
                self.control.apply(key, data["stats"])

        def lost() -> None:
            if self.control is not None:
                self.control.worker_gone(key)

        worker.channel = control.SupervisorChannel(message, lost)
        control.adopt(self.reactor, mine, worker.channel)

    # events
    def worker_ready(self, worker: _WorkerProcess) -> None:
        """A worker listens on every port."""
        log.info("worker {index} (pid {pid}) ready", index=worker.index, pid=worker.pid)
        if all(w is not None and w.ready for w in self.workers) and not self._ready.called:
            log.info("{count} workers listening", count=self.count)
            if self._start_timer is not None and self._start_timer.active():
                self._start_timer.cancel()
            self._start_timer = None
            self._ready.callback(None)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def worker_ended(self, worker: _WorkerProcess, status: Any) -> None:
        """A worker exited: fail (not started yet), restart (it died), or nothing (stop)."""
        if self.stopping:
            return
        how = (f"signal {status.signal}" if getattr(status, "signal", None)
               else f"status {getattr(status, 'exitCode', '?')}")
        if not worker.ready:
            log.error("worker {index} (pid {pid}) exited with {how} before it was "
                      "listening: stopping", index=worker.index, pid=worker.pid, how=how)
            self.failed = True
            self._not_ready(RuntimeError(f"worker {worker.index} failed to start"))
            self._stop_reactor()
            return
        now = self.reactor.seconds()
        self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW] + [now]
        if len(self._restarts) > MAX_RESTARTS:
            log.error("worker {index} (pid {pid}) exited with {how}; {count} restarts in "
                      "{window:.0f} s: stopping", index=worker.index, pid=worker.pid, how=how,
                      count=len(self._restarts) - 1, window=RESTART_WINDOW)
            self.failed = True
            self._stop_reactor()
            return
        log.warn("worker {index} (pid {pid}) exited with {how}: starting it again",
                 index=worker.index, pid=worker.pid, how=how)

        def restart() -> None:
            if not self.stopping:
                self._spawn(worker.index)

        self.reactor.callLater(RESTART_DELAY, restart)

    def _not_ready(self, why: Exception) -> None:
        """A failed start: :meth:`whenReady` fails with ``why``."""
        if not self._ready.called:
            self._ready.errback(why)
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                waiter.errback(why)

    def _stop_reactor(self) -> None:
        """Stop the reactor once (two workers may fail in the same moment)."""
        from twisted.internet.error import ReactorNotRunning

        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    def whenReady(self) -> defer.Deferred[None]:  # noqa: N802 - Twisted style
        """Fires once every worker listens (fails if one could not start)."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._ready.called:
            self._ready.addBoth(lambda v: (waiter.errback(v) if isinstance(v, Failure)
                                           else waiter.callback(None)) or v)
        else:
            self._waiters.append(waiter)
        return waiter

    def pids(self) -> list[int]:
        """The running workers' process ids."""
        return [w.pid for w in self.workers if w is not None and w.pid is not None]

    def _running_pids(self) -> dict[int, int]:
        """Worker index -> process id, for the workers running and listening."""
        return {w.index: w.pid for w in self.workers
                if w is not None and w.pid is not None and w.ready and not w.ended.called}

    def reload(self) -> bool:
        """Read the config source again; if valid, every worker reloads it (SIGHUP)."""
        from vtwist import runner

        try:
            config = self.load()
        except Exception as e:  # noqa: BLE001 - ConfigError, OSError, ValueError
            log.error("reload: {why}; keeping the running config", why=e)
            return False
        parsed = runner.validate(config)
        if parsed is None:
            log.error("reload: the new config is invalid (above); keeping the running one")
            return False
        from vtwist.transport.domainsocket.settings import describe

        unix = unix_listeners(config)
        if sorted(unix) != sorted(self.unix_ports):
            log.error("reload: the UNIX socket listeners change ({old} -> {new}): with "
                      "--workers the supervisor holds them, restart for that; keeping the "
                      "running config",
                      old=", ".join(map(describe, self.unix_ports)) or "none",
                      new=", ".join(map(describe, unix)) or "none")
            return False
        if self.control is not None or parsed.api is not None or parsed.metrics is not None:
            self._warn_control_changes(parsed)
        self.config = config
        self._write_config(config)
        for worker in self.workers:
            if worker is not None:
                worker.signal(signal.SIGHUP)
        self.udp_slots.sweep_later(self._running_pids)
        log.info("reload: passed to {count} workers", count=self.count)
        return True

    def _warn_control_changes(self, new: Any) -> None:
        """The API and metrics endpoints are the supervisor's: a reload does not move them."""
        from vtwist.config.loader import parse_config

        old = parse_config(self.config, lambda _: None)
        api_inbounds = [[i for i in c.inbounds if i.tag in c.api_inbound_tags()]
                        for c in (old, new)]
        if (old.stats, old.api, old.metrics, api_inbounds[0]) != \
                (new.stats, new.api, new.metrics, api_inbounds[1]):
            log.warn("reload: the stats, api and metrics sections and the API inbounds are "
                     "the supervisor's: a change to them takes effect at the next start")

    def stopService(self) -> defer.Deferred[Any]:  # noqa: N802 - Twisted's name
        """SIGTERM every worker, SIGKILL what is left after :data:`STOP_TIMEOUT`."""
        super().stopService()
        self.stopping = True
        if self._start_timer is not None and self._start_timer.active():
            self._start_timer.cancel()
        running = [w for w in self.workers if w is not None and not w.ended.called]
        for worker in running:
            worker.signal(signal.SIGTERM)

        def kill() -> None:
            for worker in running:
                if not worker.ended.called:
                    worker.signal(signal.SIGKILL)

        timer = self.reactor.callLater(STOP_TIMEOUT, kill)

        def done(_: Any) -> Any:
            if timer.active():
                timer.cancel()
            self._cleanup()
            self.udp_slots.close()
            released = self._release_unix()
            if self.control is not None:
                control, self.control = self.control, None
                released.addCallback(lambda _: control.stopService())
            return released

        return defer.DeferredList([w.ended for w in running]).addCallback(done)

    def _release_unix(self) -> defer.Deferred[Any]:
        """Close the UNIX sockets, removing a file socket's path and lock (the workers have
        stopped)."""
        ports, self.unix_ports = list(self.unix_ports.values()), {}
        return defer.DeferredList([defer.maybeDeferred(port.stopListening)
                                   for port in ports], consumeErrors=True)

    def _cleanup(self) -> None:
        for fd in (self._tables_fd, self._null_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._tables_fd = self._null_fd = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def install_reload_signal(supervisor: Supervisor, reactor: Any) -> None:
    """SIGHUP reloads every worker (in the reactor, not in the signal handler)."""
    def handler(signum: int, frame: Any) -> None:
        reactor.callFromThread(supervisor.reload)

    signal.signal(signal.SIGHUP, handler)


def prepare(config: dict[str, Any]) -> bool:
    """Validate ``config`` for workers (printing why not, no traceback): True if it can run."""
    from vtwist import runner

    return runner.build(config) is not None


def supervise(config: dict[str, Any], workers: int,
              load: Callable[[], dict[str, Any]] | None = None, pidfile: str | None = None,
              assets: str | None = None) -> int:
    """``python -m vtwist run --workers N``: run until SIGINT/SIGTERM; the exit status."""
    if not prepare(config):
        return 1
    from twisted.internet import reactor

    from vtwist import runner
    from vtwist.config.errors import ConfigError
    from vtwist.config.loader import parse_config
    from vtwist.logsetup import begin_logging

    try:
        logs = begin_logging(parse_config(config, lambda _: None).log)
    except ConfigError as e:
        print(f"vtwist: config error: {e}", file=sys.stderr)
        return 1
    log_open_files_limit()
    supervisor = Supervisor(config, workers, reactor, load, assets)
    install_reload_signal(supervisor, reactor)
    if pidfile:
        runner._write_pidfile(pidfile, reactor)
    reactor.callWhenRunning(supervisor.startService)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stopService)
    reactor.run()
    del logs
    return 1 if supervisor.failed else 0
