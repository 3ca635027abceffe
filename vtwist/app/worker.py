"""One worker of ``--workers N`` (the supervisor is :mod:`vtwist.app.workers`), and the open
files limit every vtwist process raises at start-up.

A worker is ``python -m vtwist run`` started with :data:`ENV` = "index/count/supervisor pid",
the shared replay mapping on fd :data:`TABLES_FD`, a readiness pipe on :data:`READY_FD` and
its control channel on :data:`~vtwist.app.control.CONTROL_FD`. It binds every TCP listener
with ``SO_REUSEPORT``; its UDP sockets it asks of the supervisor over the channel on
:data:`~vtwist.app.udpslots.SLOTS_FD` (:mod:`vtwist.app.udpslots`); the UNIX sockets the
supervisor bound it adopts from the descriptors :data:`UNIX_FDS_ENV` names
(:mod:`vtwist.transport.domainsocket.shared`). It
uses the shared replay tables, dies with its supervisor
(``PR_SET_PDEATHSIG``), ignores SIGINT (the supervisor decides), on SIGTERM stops accepting
and lets its live connections finish before it stops (:mod:`vtwist.app.drain`), and
writes ``ready`` once all its inbounds listen.

With ``stats`` or ``metrics`` it counts as one process does and pushes what it counted to
the supervisor (:mod:`vtwist.app.statsync`) every :data:`~vtwist.app.statsync.INTERVAL`
seconds and once more when it stops; it serves neither the API (the supervisor leaves the
API inbounds out of the workers' config) nor the metrics endpoint: the supervisor serves
both from the sum. It reopens its log files when the supervisor asks (RestartLogger).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from twisted.logger import Logger

from vtwist.app import udpslots
from vtwist.proxy import sharedreplay
from vtwist.transport import reuseport
from vtwist.transport.domainsocket import shared as shared_unix

log = Logger()

#: the environment variable that makes ``python -m vtwist run`` a worker: "index/count/ppid"
ENV = "VTWIST_WORKER"
#: the shared replay tables and the readiness pipe in a worker
TABLES_FD = 3
READY_FD = 4
#: the environment variable naming the supervisor's UNIX listening sockets: a JSON object,
#: socket address (as :func:`vtwist.transport.domainsocket.settings.inbound_address` gives
#: it; an abstract name starts with NUL) -> the fd it is on in the worker
UNIX_FDS_ENV = "VTWIST_UNIX_FDS"
#: a second SIGTERM this many seconds after the first stops the worker without waiting
#: for its connections
TERM_AGAIN = 0.5
#: the first of those fds (after the control channel's and the UDP slot channel's,
#: :data:`vtwist.app.udpslots.SLOTS_FD`)
FIRST_UNIX_FD = 7


# -- resource limits -------------------------------------------------------------------------
#: file descriptors a relayed connection holds: its two sockets
FDS_PER_CONNECTION = 2
#: ... and with the splice relay (plain TCP both sides), a pipe (two ends) per direction too
FDS_PER_SPLICED_CONNECTION = 6
#: descriptors kept aside for listeners, log files, the reactor's own
FDS_RESERVED = 64


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Go programs do); (soft, hard)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def connections_allowed(soft: int) -> tuple[int, int]:
    """Relayed connections ``soft`` descriptors allow: (plain, every one spliced)."""
    room = max(0, soft - FDS_RESERVED)
    return room // FDS_PER_CONNECTION, room // FDS_PER_SPLICED_CONNECTION


def log_open_files_limit() -> int:
    """Raise the open files limit and log it with the connections it allows (a start-up
    line like ``listening:``, shown at ``loglevel`` warning too)."""
    soft, _ = raise_open_files_limit()
    plain, spliced = connections_allowed(soft)
    log.info("open files limit {soft}: about {conns} relayed connections per process "
             "({spliced} if every one splices)", soft=soft, conns=plain, spliced=spliced,
             vtwist_always=True)
    return soft


# -- the worker side -------------------------------------------------------------------------
def _die_with_parent(ppid: int) -> None:
    """SIGTERM this process when the supervisor dies (Linux); exit now if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != ppid:
        os._exit(1)


@contextlib.contextmanager
def _record_lock(fd: int) -> Iterator[None]:
    """A POSIX record lock on ``fd`` (per process, so workers exclude each other)."""
    import fcntl

    fcntl.lockf(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN)


class Worker:
    """This process as worker ``index`` of ``count``."""

    def __init__(self, index: int, count: int, ready_fd: int = READY_FD,
                 supervisor: int = 0) -> None:
        self.index = index
        self.count = count
        self.ready_fd = ready_fd
        #: the supervisor's process id
        self.supervisor = supervisor
        #: the control channel (a WorkerChannel) once started
        self.channel: Any = None

    def started(self, service: Any, reactor: Any) -> None:
        """Once every inbound listens, tell the supervisor; leave SIGINT to it; push the
        counters over the control channel."""
        def ready(_: Any) -> None:
            try:
                os.write(self.ready_fd, b"ready\n")
                os.close(self.ready_fd)
            except OSError:
                pass

        service.whenListening().addCallbacks(ready, lambda _: None)
        reactor.callWhenRunning(self._signals, service, reactor)
        reactor.addSystemEventTrigger("after", "shutdown", self._orphaned)
        self._control(service, reactor)

    def _control(self, service: Any, reactor: Any) -> None:
        """Open the control channel: answer requests, push the counters."""
        from vtwist.app import statsync
        from vtwist.app.control import CONTROL_FD, WorkerChannel
        from vtwist.logsetup import reopen_logs

        try:
            os.fstat(CONTROL_FD)
        except OSError:  # no channel (not started by a supervisor of this version)
            return
        channel = self.channel = WorkerChannel(CONTROL_FD, reactor,
                                               {"restart_logger": reopen_logs})
        channel.start()
        known: set[Any] = set()
        last: list[Any] = [0, None]  # active, kcp: what was pushed last

        def push() -> None:
            try:
                pushed()
            except Exception:  # noqa: BLE001 - logged; the next interval tries again
                log.failure("workers: pushing the counters failed")

        def pushed() -> None:
            stats = getattr(service.tunnels, "stats", None)
            if stats is None:
                return
            kcp = None
            if stats.metrics:
                from vtwist.app.metrics import kcp_figures

                kcp = kcp_figures
            message = statsync.take(stats, known, kcp)
            if not any((message["counters"], message["totals"], message["failed"],
                        message["handshakes"], message["opened"])) and \
                    [message["active"], message.get("kcp")] == last:
                return  # nothing new: an idle worker stays quiet
            last[:] = [message["active"], message.get("kcp")]
            channel.send({"stats": message})

        from twisted.internet.task import LoopingCall

        loop = LoopingCall(push)
        loop.clock = reactor
        reactor.callWhenRunning(loop.start, statsync.INTERVAL, now=False)

        def last_push() -> None:  # after the reactor closed every connection
            if loop.running:
                loop.stop()
            push()
            channel.close()

        reactor.addSystemEventTrigger("after", "shutdown", last_push)

    def _orphaned(self) -> None:
        """The supervisor died without cleaning up (SIGKILL): remove its private config
        copy, ``/tmp/vtwist-workers-*/config.json`` (any worker may; the others find it
        gone)."""
        if self.supervisor and os.getppid() != self.supervisor:
            config = _config_argument()
            folder = os.path.dirname(config) if config else ""
            if os.path.basename(folder).startswith("vtwist-workers-"):
                import shutil

                shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _signals(service: Any, reactor: Any) -> None:
        """Ignore SIGINT; on SIGTERM stop accepting, let the live connections finish (at
        most :data:`~vtwist.app.drain.DRAIN_TIMEOUT`), then stop; a SIGTERM that comes
        later than :data:`TERM_AGAIN` after the first stops at once (the supervisor's and
        a process group's signal may both arrive together)."""
        from vtwist.app.drain import drain

        first: list[float] = []

        def stop() -> None:
            if reactor.running:
                reactor.stop()

        def begin() -> None:
            drain(service, reactor).addBoth(lambda _: stop())

        def term(signum: int, frame: Any) -> None:
            now = time.monotonic()
            if not first:
                first.append(now)
                reactor.callFromThread(begin)
            elif now - first[0] > TERM_AGAIN:
                reactor.callFromThread(stop)

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, term)


_current: Worker | None = None


def current() -> Worker | None:
    """This process as a worker of ``--workers N``; None in a single process."""
    return _current


def worker_from_environment(environ: dict[str, str] | None = None) -> Worker | None:
    """In a worker (:data:`ENV` set): share ports and replay tables; None otherwise."""
    environ = os.environ if environ is None else environ
    spec = environ.pop(ENV, None)
    if not spec:
        return None
    index, count, ppid = (int(part) for part in spec.split("/"))
    _die_with_parent(ppid)
    reuseport.enable(held_udp=udpslots.held_socket if udpslots.install() else None)
    shared_unix.install(unix_fds(environ.pop(UNIX_FDS_ENV, "")))
    global _current
    size = sharedreplay.mapping_size()
    mapping = mmap.mmap(TABLES_FD, size)
    sharedreplay.install(sharedreplay.layout(mapping, lambda: _record_lock(TABLES_FD)))
    _current = Worker(index, count, supervisor=ppid)
    return _current


def unix_fds(text: str) -> dict[str, int]:
    """:data:`UNIX_FDS_ENV`'s value read (empty: none)."""
    if not text:
        return {}
    table = json.loads(text)
    return {str(address): int(fd) for address, fd in table.items()}


def _config_argument() -> str | None:
    """The ``--config`` path of this process's command line."""
    import sys

    argv = sys.argv
    for i, arg in enumerate(argv[:-1]):
        if arg in ("--config", "-c"):
            return argv[i + 1]
    return None
