"""Zero-copy relay: two plain TCP sockets joined kernel-to-kernel with ``os.splice``.

When both transports of a :class:`~vtwist.tunnel.relay.Relay` are plain TCP connections
(no TLS, no wrapping layer: the bytes pass unchanged, e.g. SOCKS/HTTP CONNECT/dokodemo to
freedom), :func:`offer_splice` moves the relay onto a :class:`Splicer`: each direction gets
a pipe, and bytes go socket → pipe → socket with ``os.splice`` without entering Python.

Twisted stays in charge of readiness. The transports stop reading and writing, and one
small descriptor per socket (:class:`SocketEnd`, an ``IReadDescriptor`` and
``IWriteDescriptor`` on the same fd) is registered with the reactor instead; the reactor
keeps one selectable per fd, so the transport and its end are never registered together.

- **When.** A relay is offered the splice :data:`SPLICE_AFTER` (20 ms) after it starts, so
  a short exchange never pays for two pipes; one that has moved :data:`BULK_HINT` bytes
  by one of the looks every :data:`SPLICE_EARLY` (2 ms) before that is bulk and is offered
  it then (one :class:`Nursery` timer per reactor looks at all young relays).
- **Order.** The switch happens only once neither transport has anything in its write
  buffer (held or early bytes, a write in flight): until then the relay runs as usual, a
  side pausing while the buffer its bytes go into drains. Every byte written before is then
  in the kernel.
- **Moving.** One readiness event runs a direction as far as it goes: splice the source
  into the pipe, at once out of the pipe into the destination, again, until the source has
  nothing (``EAGAIN``), the destination takes no more, or :data:`ROUND_LIMIT` bytes moved. A
  pipe starts at :data:`PIPE_SIZE` and grows to :data:`BULK_PIPE_SIZE` once a direction
  moves a pipeful in one event, while the process's pipes have grown by less than
  :func:`growth_budget` (so bulk relays leave an unprivileged user's pipe quota to new ones).
- **Backpressure.** A direction reads its source only while its pipe is empty. When the
  destination takes less than the pipe holds (``EAGAIN``), the source stops reading and the
  destination waits for writability; when it can take more, the same event drains the pipe
  and reads on, so a direction under steady backpressure stays registered for writability
  only and changes no registration per chunk. At most one pipe per direction is in flight.
- **Half-close.** End of stream on a source (after its pipe drained) shuts the destination's
  write side (``SHUT_WR``) and reports :meth:`Relay.eof`, which keeps V2Ray's timers.
- **Timers and counters.** Every splice marks ``relay.activity.active`` and adds to
  ``relay.bytes``.
- **Closing.** :meth:`Relay.finish` calls :meth:`Splicer.stop` first: ends unregistered,
  pipes closed (after one last non-blocking drain), the transports handed back, then closed
  by Twisted as usual, so ``connectionLost`` reaches both protocols. A ``loseConnection`` or
  ``abortConnection`` from elsewhere (an inbound closing all its connections) is routed the
  same way while the splice runs.

Anything that cannot splice (another platform, no ``os.splice``, TLS, a transformed stream,
a reactor without ``IReactorFDSet``, a pipe that cannot be made) keeps the normal relay.
``VTWIST_SPLICE=0`` in the environment turns splicing off.

An inbound that hands its raw TCP transport to the tunnel promises that the bytes after its
handshake pass unchanged (SOCKS, HTTP CONNECT, dokodemo-door, Trojan); inbounds that
transform the stream hand over a wrapping transport (VMess, Shadowsocks) and never splice.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor, IWriteDescriptor
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.transport.internals import idle_plain_tcp

if TYPE_CHECKING:
    from vtwist.tunnel.relay import Relay

log = Logger(namespace="vtwist.splice")

#: Bytes a new pipe holds (``F_SETPIPE_SZ``; the kernel rounds up to pages). A splice into
#: it moves at most this much, and it is all a direction keeps in flight.
PIPE_SIZE = 256 * 1024

#: What a pipe grows to once its direction moves bulk (one reactor event brought at least a
#: pipeful): four times fewer splices and reactor wake-ups per byte. It is the default
#: ``/proc/sys/fs/pipe-max-size``; where the pipe quota refuses, the pipe keeps its size.
BULK_PIPE_SIZE = 1024 * 1024

#: A pipe that holds less than this is not worth splicing through: an unprivileged user past
#: ``/proc/sys/fs/pipe-user-pages-soft`` (64 MiB of pipes: 128 relays at PIPE_SIZE) gets
#: pipes of two pages and cannot grow them, and an 8 KiB pipe would move a byte stream with
#: more system calls than the normal relay. Such a relay stays on the protocols.
MIN_PIPE_SIZE = 64 * 1024

#: One reactor event moves at most this many bytes in a direction, so one busy relay cannot
#: starve the others (about a millisecond at loopback speed).
ROUND_LIMIT = 4 * BULK_PIPE_SIZE

#: A relay is offered the splice this long after it starts: a short exchange (a request and
#: its answer) is over by then and never pays for the pipes.
SPLICE_AFTER = 0.02

#: Until :data:`SPLICE_AFTER` the switch looks this often whether a relay has moved
#: :data:`BULK_HINT` bytes (both ways), and a relay that has switches then: at gigabytes a
#: second 20 ms carry tens of MB through the protocols at several times the CPU cost per
#: byte (a relay made before its client starts sending gets there on a later look).
SPLICE_EARLY = 0.002

#: See :data:`SPLICE_EARLY`; far more than a request and its answer.
BULK_HINT = 256 * 1024

#: How long the switch waits between checks for empty write buffers (grows to the last):
#: a bulk relay's buffer takes a few ms to drain while its source is paused, and every
#: millisecond the check lags is a millisecond of paused relay.
SWITCH_DELAYS = (0.0, 0.001, 0.002, 0.002, 0.004, 0.004, 0.008, 0.008, 0.016, 0.032, 0.05)

_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_GONE = frozenset({errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN,
                   errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EBADF})


@dataclass
class SpliceStats:
    """Process-wide counters (tests and benchmarks read them)."""

    #: relays that switched to splicing
    started: int = 0
    #: relays whose transports could not splice (or whose setup failed)
    declined: int = 0
    #: bytes moved by splice, both directions
    bytes: int = 0
    #: splicers not yet stopped (pipes open)
    live: int = 0
    #: bytes the open pipes grew by past their first size (see :func:`growth_budget`)
    grown: int = 0


stats = SpliceStats()

_budget: float | None = None


def growth_budget() -> float:
    """How many bytes this process's pipes may grow by in all, so bulk relays leave the
    per-user pipe quota to new relays: a quarter of ``/proc/sys/fs/pipe-user-pages-soft``
    (a few processes of the same user share it), no bound for root (the kernel applies no
    quota to it) or where the quota is off."""
    global _budget
    if _budget is None:
        try:
            with open("/proc/sys/fs/pipe-user-pages-soft") as quota:
                pages = int(quota.read())
        except (OSError, ValueError):
            pages = 0
        _budget = (float("inf") if os.geteuid() == 0 or pages <= 0
                   else pages * os.sysconf("SC_PAGE_SIZE") / 4)
    return _budget


def enabled() -> bool:
    """Whether this platform can splice (Linux, Python 3.10+) and the environment allows it."""
    return (sys.platform.startswith("linux") and hasattr(os, "splice")
            and os.environ.get("VTWIST_SPLICE", "1") != "0")


def offer_splice(relay: Relay, reactor: Any) -> None:
    """Move ``relay`` onto a :class:`Splicer` once its transports allow it, or leave it."""
    inbound, outbound = relay.transports
    if not (_plain_tcp(inbound) and _plain_tcp(outbound)):  # most relays: asked first
        stats.declined += 1  # (without asking enabled(): an environment lookup a relay)
        return
    if not enabled() or not IReactorFDSet.providedBy(reactor):
        return
    # Not now: the relay's builder replays held input into it right after construction.
    switch = SpliceSwitch(relay, reactor)
    relay.splice = switch
    young = _nursery.get(reactor)
    if young is None:
        young = _nursery[reactor] = Nursery(reactor)
    young.add(switch)


class Nursery:
    """The relays of one reactor younger than :data:`SPLICE_AFTER`, looked at together
    every :data:`SPLICE_EARLY` while there are any: a relay that has moved
    :data:`BULK_HINT` bytes, or has come of age, goes on to its switch's check. One timer
    for all of them costs a short connection a dict entry, not a timer of its own."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.looks = 0  # looks so far (ages count in looks: no clock to jump)
        self.young: dict[SpliceSwitch, int] = {}  # switch -> the look it comes of age at
        self._call: Any = None

    def add(self, switch: SpliceSwitch) -> None:
        """Look at ``switch``'s relay from now on."""
        self.young[switch] = self.looks + round(SPLICE_AFTER / SPLICE_EARLY)
        switch.nursery = self
        if self._call is None:
            self._call = self.reactor.callLater(SPLICE_EARLY, self.look)

    def discard(self, switch: SpliceSwitch) -> None:
        """``switch``'s relay ended: forget it (and stop looking once no relay is left)."""
        self.young.pop(switch, None)
        if not self.young:
            call, self._call = self._call, None
            if call is not None and call.active():
                call.cancel()
            if _nursery.get(self.reactor) is self:
                del _nursery[self.reactor]

    def look(self) -> None:
        """Hand the bulk and the grown-up relays on; look again while any are left."""
        self._call = None
        self.looks += 1
        looks = self.looks
        ready = [switch for switch, of_age in self.young.items()
                 if looks >= of_age or sum(switch.relay.bytes) >= BULK_HINT]
        for switch in ready:
            del self.young[switch]
            switch.nursery = None
            switch.check()
        if self.young:
            self._call = self.reactor.callLater(SPLICE_EARLY, self.look)
        elif _nursery.get(self.reactor) is self:
            del _nursery[self.reactor]


_nursery: dict[Any, Nursery] = {}


def _plain_tcp(transport: Any) -> bool:
    """A plain TCP connection (it may have bytes buffered right now)."""
    return isinstance(transport, Connection) and not transport.TLS


class SpliceSwitch:
    """Waits until neither write buffer holds a byte, then starts the splicer (it stands in
    ``relay.splice`` until then, so :meth:`Relay.finish` stops it too).

    Meanwhile a side whose bytes would go into a non-empty buffer pauses so that buffer can
    drain; a direction whose destination is empty keeps flowing, so no peer ever waits on a
    pause of ours (a server that writes before it reads more still gets its bytes read).
    """

    def __init__(self, relay: Relay, reactor: Any) -> None:
        self.relay = relay
        self.reactor = reactor
        self.tries = 0
        #: the nursery that looks at the relay until it is bulk or SPLICE_AFTER old
        self.nursery: Nursery | None = None
        self.paused = [False, False]
        #: never: the relay still runs through the protocols
        self.running = False
        self._call: Any = None

    def later(self, delay: float) -> None:
        """Check again after ``delay`` seconds."""
        self._call = self.reactor.callLater(delay, self.check)

    def stop(self) -> None:
        """The relay ends: no more checks."""
        if self.nursery is not None:
            self.nursery.discard(self)
            self.nursery = None
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self._resume()

    def check(self) -> None:
        """Start the splicer if both write buffers are empty, else pause and look again."""
        self._call = None
        relay = self.relay
        if relay.finished or any(relay.eofs) or relay.splice is not self:
            if relay.splice is self:
                relay.splice = None  # half-closed already: the protocols finish the relay
            self._resume()
            return
        transports = relay.transports
        idle = [idle_plain_tcp(t) for t in transports]
        if all(idle):
            splicer = Splicer(relay, self.reactor)
            try:
                splicer.start()
            except OSError as e:
                log.info("splice setup failed, relaying as usual: {e}", e=e)
                stats.declined += 1
                splicer.stop()
                relay.splice = None
                self._resume()
            return
        if not all(_plain_tcp(t) and t.connected and not t.disconnecting for t in transports):
            stats.declined += 1
            relay.splice = None
            self._resume()
            return
        for side, transport in enumerate(transports):
            drained = idle[1 - side]  # the buffer this side's bytes go into
            if drained == self.paused[side]:
                self.paused[side] = not drained
                if drained:
                    transport.resumeProducing()
                else:
                    transport.pauseProducing()
        delay = SWITCH_DELAYS[min(self.tries, len(SWITCH_DELAYS) - 1)]
        self.tries += 1
        self.later(delay)

    def _resume(self) -> None:
        for side, transport in enumerate(self.relay.transports):
            if self.paused[side]:
                self.paused[side] = False
                if transport.connected and not transport.disconnecting:
                    transport.resumeProducing()


@implementer(IReadDescriptor, IWriteDescriptor)
class SocketEnd:
    """One socket of a splicer, registered with the reactor in its transport's place."""

    __slots__ = ("splicer", "side", "transport", "fd", "reading", "writing", "inflow",
                 "outflow")

    def __init__(self, splicer: Splicer, side: int, transport: Any) -> None:
        self.splicer = splicer
        self.side = side
        self.transport = transport
        self.fd: int = transport.fileno()
        self.reading = False
        self.writing = False
        #: the pipe this socket's bytes go into, and the one that drains into it
        self.inflow: Any = None
        self.outflow: Any = None

    def fileno(self) -> int:
        """The socket's descriptor, or -1 once the transport closed it."""
        try:
            return int(self.transport.fileno())
        except (AttributeError, OSError, ValueError):
            return -1

    def doRead(self) -> None:
        """Bytes (or the end) arrived on this socket."""
        self.splicer.pump(self.inflow)

    def doWrite(self) -> None:
        """This socket can take more."""
        self.splicer.pump(self.outflow)

    def connectionLost(self, reason: Failure) -> None:
        """The reactor dropped this descriptor (an error, a hang-up, or shutdown)."""
        self.reading = self.writing = False
        self.splicer.endLost(self.side, reason)

    def logPrefix(self) -> str:
        """For the reactor's log lines."""
        return "splice"

    def startReading(self) -> None:
        """Ask the reactor for readability."""
        if not self.reading:
            self.reading = True
            self.splicer.reactor.addReader(self)

    def stopReading(self) -> None:
        """Stop asking for readability."""
        if self.reading:
            self.reading = False
            self.splicer.reactor.removeReader(self)

    def startWriting(self) -> None:
        """Ask the reactor for writability."""
        if not self.writing:
            self.writing = True
            self.splicer.reactor.addWriter(self)

    def stopWriting(self) -> None:
        """Stop asking for writability."""
        if self.writing:
            self.writing = False
            self.splicer.reactor.removeWriter(self)


class _Pipe:
    """One direction: bytes from side ``src`` to the other side through a pipe."""

    __slots__ = ("src", "rfd", "wfd", "size", "grown", "extra", "pending", "eof", "shut")

    def __init__(self, src: int) -> None:
        self.src = src
        self.rfd = self.wfd = -1
        self.size = 0  # what the pipe holds (bytes)
        self.grown = False  # tried to grow to BULK_PIPE_SIZE
        self.extra = 0  # bytes it grew by (counted in stats.grown while open)
        self.pending = 0  # bytes in the pipe
        self.eof = False  # the source ended
        self.shut = False  # the destination's write side is shut

    def open(self) -> None:
        """Make the pipe, as large as :data:`PIPE_SIZE` where the quota allows; raise
        ``OSError`` if it holds less than :data:`MIN_PIPE_SIZE`."""
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.wfd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # a per-user pipe quota: the default 64 KiB still works
            pass
        self.size = fcntl.fcntl(self.wfd, fcntl.F_GETPIPE_SZ)
        if self.size < MIN_PIPE_SIZE:
            raise OSError(errno.ENOBUFS, f"a pipe of {self.size} bytes (the user's pipe "
                                         "quota is used up)")

    def grow(self) -> None:
        """Try once to hold :data:`BULK_PIPE_SIZE`, within :func:`growth_budget` (and the
        kernel's quota, which may refuse: the pipe keeps its size)."""
        self.grown = True
        more = BULK_PIPE_SIZE - self.size
        if more <= 0 or stats.grown + more > growth_budget():
            return
        try:
            size = fcntl.fcntl(self.wfd, fcntl.F_SETPIPE_SZ, BULK_PIPE_SIZE)
        except OSError:
            return
        self.extra = size - self.size
        self.size = size
        stats.grown += self.extra

    def close(self) -> None:
        for fd in (self.rfd, self.wfd):
            if fd >= 0:
                os.close(fd)
        self.rfd = self.wfd = -1
        stats.grown -= self.extra
        self.extra = 0


class Splicer:
    """Moves a relay's bytes between its two TCP sockets through two pipes."""

    def __init__(self, relay: Relay, reactor: Any) -> None:
        self.relay = relay
        self.reactor = reactor
        self.ends = [SocketEnd(self, side, t) for side, t in enumerate(relay.transports)]
        self.pipes = [_Pipe(0), _Pipe(1)]
        for end in self.ends:
            end.inflow = self.pipes[end.side]
            end.outflow = self.pipes[1 - end.side]
        self.running = False
        self.stopped = False

    # -- setup and teardown ---------------------------------------------------------------
    def start(self) -> None:
        """Open the pipes, take both sockets from their transports, start reading."""
        for pipe in self.pipes:
            pipe.open()
        relay = self.relay
        for end in self.ends:
            t = end.transport
            t.unregisterProducer()
            t.stopReading()
            t.stopWriting()
            t.loseConnection = self._loseConnection
            t.abortConnection = self._aborter(end)
        relay.splice = self
        self.running = True
        stats.started += 1
        stats.live += 1
        for end in self.ends:
            end.startReading()

    def stop(self) -> None:
        """Hand the sockets back to their transports and close the pipes (idempotent)."""
        if self.stopped:
            return
        self.stopped = True
        was_running, self.running = self.running, False
        for pipe in self.pipes:
            if pipe.pending and not pipe.shut:
                self._drain_once(pipe)
        for end in self.ends:
            t = end.transport
            for name in ("loseConnection", "abortConnection"):
                t.__dict__.pop(name, None)
            if t.connected and not t.disconnecting:
                end.stopReading()
                end.stopWriting()
            end.reading = end.writing = False
        for pipe in self.pipes:
            pipe.close()
        if was_running:
            stats.live -= 1

    def _loseConnection(self) -> None:
        """A transport's ``loseConnection`` while spliced: the relay ends gracefully."""
        self.relay.finish()

    def _aborter(self, end: SocketEnd) -> Any:
        def abortConnection() -> None:
            self.stop()
            end.transport.abortConnection()
        return abortConnection

    # -- events from the reactor ----------------------------------------------------------
    def readable(self, side: int) -> None:
        """``side``'s socket has bytes or its end: move them towards the other side."""
        self.pump(self.pipes[side])

    def writable(self, side: int) -> None:
        """``side``'s socket can take more: drain the pipe flowing into it, then read on."""
        self.pump(self.pipes[1 - side])

    def endLost(self, side: int, reason: Failure) -> None:
        """The reactor dropped ``side``'s descriptor (a hang-up, an error, its shutdown): the
        relay loses that side, and its transport is told at once, as the reactor would have
        told it; the other side closes gracefully."""
        if self.running:
            self.relay.lost(side, reason)
        transport = self.ends[side].transport
        if transport.connected:
            transport.connectionLost(reason)

    # -- moving bytes ---------------------------------------------------------------------
    def pump(self, pipe: _Pipe) -> None:
        """Move ``pipe``'s direction as far as it goes in one event: drain the pipe, splice
        the source in, drain again, ... until the source is empty (wait for readability),
        the destination is full (wait for writability), the source ended, or
        :data:`ROUND_LIMIT` bytes moved (the registrations stay: the reactor calls again)."""
        if not self.running:
            return
        src_side = pipe.src
        dst_side = 1 - src_side
        src = self.ends[src_side].fd
        dst = self.ends[dst_side].fd
        rfd, wfd = pipe.rfd, pipe.wfd
        splice = os.splice
        pending = pipe.pending
        moved = 0
        while True:
            while pending:
                try:
                    out = splice(rfd, dst, pending, None, None, _FLAGS)  # (positional: faster)
                except BlockingIOError:
                    out = 0
                except OSError as e:
                    pipe.pending = pending
                    self._gone(dst_side, e)
                    return
                if not out:
                    pipe.pending = pending
                    self._await_destination(pipe)
                    return
                pending -= out
            pipe.pending = 0
            if moved >= ROUND_LIMIT:
                return
            try:
                n = splice(src, wfd, pipe.size, None, None, _FLAGS)
            except BlockingIOError:
                self._await_source(pipe)
                return
            except OSError as e:
                self._gone(src_side, e)
                return
            if n == 0:
                pipe.eof = True
                self.ends[src_side].stopReading()
                self.ends[dst_side].stopWriting()
                self._shut(pipe)
                return
            pending = n
            moved += n
            relay = self.relay
            relay.bytes[src_side] += n
            relay.activity.active = True
            stats.bytes += n
            if moved >= pipe.size and not pipe.grown:
                pipe.grow()

    def _await_destination(self, pipe: _Pipe) -> None:
        """Backpressure: the source stops reading until the destination takes more."""
        self.ends[pipe.src].stopReading()
        self.ends[1 - pipe.src].startWriting()

    def _await_source(self, pipe: _Pipe) -> None:
        """The pipe is empty and so is the source: wait for it to be readable."""
        self.ends[1 - pipe.src].stopWriting()
        if not pipe.eof:
            self.ends[pipe.src].startReading()

    def _shut(self, pipe: _Pipe) -> None:
        """The source ended: once its pipe is empty, half-close the destination."""
        if pipe.pending or pipe.shut or not self.running:
            return
        pipe.shut = True
        try:
            self.ends[1 - pipe.src].transport.getHandle().shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the peer is gone; its own read or write will tell
        self.relay.eof(pipe.src)

    def _drain_once(self, pipe: _Pipe) -> None:
        """One last non-blocking attempt to deliver what a pipe still holds."""
        try:
            pipe.pending -= os.splice(pipe.rfd, self.ends[1 - pipe.src].fd, pipe.pending,
                                      flags=_FLAGS)
        except OSError:
            pass

    def _gone(self, side: int, error: OSError) -> None:
        """A splice on ``side``'s socket failed: that side's connection is lost."""
        if error.errno not in _GONE:
            log.info("splice on side {side} failed: {e}", side=side, e=error)
        self.relay.lost(side, Failure(error))
