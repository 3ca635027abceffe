"""The Mux.Cool client: :class:`MuxPool` shares carriers between streams, and
:class:`MuxClientEndpoint` is an ordinary ``IStreamClientEndpoint`` on top of it.

A carrier is any stream endpoint that reaches a Mux.Cool server — for V2Ray, a VMess
connection with command 3 to the special destination ``v1.mux.cool`` (``dial()`` makes one
per carrier). As V2Ray 4.34's client (mux.md §4): a new stream joins the first carrier that
is not full (``concurrency`` live sessions, or 128 in its life), else a new carrier opens; a
carrier with no session closes after ``idle_timeout`` (16 s); the New frame waits up to
100 ms for the stream's first bytes; data goes in frames of at most 8 KiB; a UDP
destination is a UDP session (one datagram per frame). When the server drops a carrier its
live streams fail and later streams open a fresh one.

KeepAlive: a carrier that has live sessions but sent nothing for ``keepalive_interval``
(30 s) sends a KeepAlive frame, so quiet sessions (a long poll, an idle SSH) do not lose
their carrier to the server's idle timer (V2Ray's VMess ``connIdle``, 300 s by default;
mux.md §4.4). A 4.34 server reads and drops it; KeepAlive frames from the server are read
and dropped here too. 4.34's own client never sends one.

Fetching through a V2Ray server with mux::

    pool = MuxPool(lambda: VMessClientEndpoint(server_ep, account, MUX_DESTINATION,
                                               command=CMD_MUX), concurrency=8)
    endpoint = MuxClientEndpoint(pool, Destination.tcp("example.com", 80))
    d = endpoint.connect(factory)   # fires with factory's protocol over a mux session
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.error import ConnectError, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.mux.connection import MuxConnection, MuxStream
from vtwist.proxy.mux.frame import _ADDRESSES, encode_address, encode_keepalive
from vtwist.proxy.mux.sessions import MAX_SESSIONS
from vtwist.reactors import resolve_reactor

__all__ = ["DEFAULT_CONCURRENCY", "IDLE_TIMEOUT", "KEEPALIVE_INTERVAL", "MuxClientEndpoint",
           "MuxPool"]

log = Logger(namespace="vtwist.mux")

DEFAULT_CONCURRENCY = 8
#: A carrier without sessions closes after this long (4.34 checks every 16 s).
IDLE_TIMEOUT = 16.0
#: How long a new session's New frame waits for the stream's first bytes (4.34: 100 ms).
FIRST_PAYLOAD_WAIT = 0.1
#: A carrier with sessions that sent nothing for this long sends a KeepAlive frame.
KEEPALIVE_INTERVAL = 30.0


class _Waiter:
    __slots__ = ("destination", "factory", "deferred")

    def __init__(self, destination: Destination, factory: Any) -> None:
        self.destination = destination
        self.factory = factory
        self.deferred: Deferred[Any] = Deferred()


class MuxCarrier(MuxConnection):
    """One client carrier of a pool and the sessions on it."""

    role = "mux client"

    def __init__(self, pool: MuxPool) -> None:
        super().__init__(pool.reactor)
        self.pool = pool
        self.waiters: list[_Waiter] = []
        self.connecting = True
        self.opened = 0
        self._idle: Any = None
        #: when the carrier last became empty (None: it has sessions)
        self._idleSince: float | None = None
        self._keepalive: Any = None
        #: sessions whose New frame waits for their first bytes, oldest first, and the one
        #: timer that sends a New alone once its wait is over
        self._newQueue: deque[MuxStream] = deque()
        self._newTimer: Any = None
        #: KeepAlive frames sent so far
        self.keepalives = 0
        self.gone = False
        self._goneWaiters: list[Deferred[None]] = []

    def whenGone(self) -> Deferred[None]:
        """Fires once the carrier's connection is closed (or never opened)."""
        if self.gone:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._goneWaiters.append(d)
        return d

    def _setGone(self) -> None:
        self.gone = True
        waiters, self._goneWaiters = self._goneWaiters, []
        for d in waiters:
            d.callback(None)

    @property
    def full(self) -> bool:
        """No room for another session (closed, 128 in its life, or ``concurrency`` active)."""
        if self.closed or self.closing:
            return True
        waiting = len(self.waiters)
        pool = self.pool
        # As 4.34, a session stops counting once End went either way (a half-closed one
        # may still be receiving): ``unended``.
        return (self.opened + waiting >= pool.max_sessions
                or self.unended + waiting >= pool.concurrency)

    closing = False

    # -- opening ------------------------------------------------------------------------
    def dial(self) -> None:
        """Connect the carrier."""
        d = self.pool.dial().connect(Factory.forProtocol(lambda: MuxCarrierProtocol(self)))
        d.addErrback(self._dialFailed)

    def _dialFailed(self, failure: Failure) -> None:
        self.connecting = False
        self.closed = True
        self._setGone()
        self.pool._remove(self)
        log.info("mux: connection to the server failed: {why}", why=failure.getErrorMessage())
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w.deferred.errback(failure)

    def connected(self, transport: Any) -> None:
        """The carrier is up: start the streams that waited for it."""
        self.connecting = False
        if self.closed:
            transport.loseConnection()
            return
        self.attach(transport)
        self._scheduleKeepAlive()
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            try:
                proto = self._start(w.destination, w.factory)
            except Exception:  # noqa: BLE001 - the factory's failure is the stream's
                w.deferred.errback()
            else:
                w.deferred.callback(proto)
        self._checkIdle()

    def open(self, destination: Destination, factory: Any) -> Deferred[Any]:
        """A stream to ``destination`` on this carrier (once it is up)."""
        self._idleSince = None
        if self.connecting:
            waiter = _Waiter(destination, factory)
            self.waiters.append(waiter)
            return waiter.deferred
        try:
            return succeed(self._start(destination, factory))
        except Exception:  # noqa: BLE001
            return fail()

    def _start(self, destination: Destination, factory: Any) -> Any:
        if self.closed:
            raise ConnectionLost("the mux connection closed")
        sessions = self.sessions
        live = sessions.live
        # SessionTable.allocate, inline for the usual case (the next id is free)
        sid = (sessions.allocated + 1) & 0xFFFF
        if sid and sid not in live:
            sessions.allocated += 1
        else:
            sid = sessions.allocate()
        stream = MuxStream(self, sid, destination)
        stream.pendingNew = True
        if stream.udp:
            sessions.add(sid, stream, udp=True)
        else:  # SessionTable.add, inline: a TCP id the client just allocated
            live[sid] = stream
            if sessions.udp:
                sessions.udp.discard(sid)
            if sid > sessions.highest:
                sessions.highest = sid
        self.opened += 1
        try:
            proto = factory.buildProtocol(None)
        except BaseException:
            stream.loseConnection()  # the session is over before it began
            raise
        if proto is None:
            stream.loseConnection()
            raise ConnectionLost("the protocol factory refused the connection")
        stream.protocol = proto
        proto.makeConnection(stream)
        if stream.pendingNew and not stream.closed:
            stream.newDeadline = self.clock.seconds() + FIRST_PAYLOAD_WAIT
            self._newQueue.append(stream)
            if self._newTimer is None:
                self._newTimer = self.clock.callLater(FIRST_PAYLOAD_WAIT, self._newsDue)
        return proto

    def _newsDue(self) -> None:
        """New frames alone for the sessions whose first-payload wait is over."""
        self._newTimer = None
        queue = self._newQueue
        now = self.clock.seconds() + 1e-9
        while queue and queue[0].newDeadline <= now:
            self.flushNew(queue.popleft())
        while queue and not queue[0].pendingNew:
            queue.popleft()  # announced with their data already
        if queue and not self.closed:
            self._newTimer = self.clock.callLater(max(0.0, queue[0].newDeadline - now),
                                                  self._newsDue)

    # -- keeping it alive ---------------------------------------------------------------
    def _scheduleKeepAlive(self) -> None:
        interval = self.pool.keepalive_interval
        if interval and not self.closed:
            self.wrote = False
            self._keepalive = self.clock.callLater(interval, self._keepAliveTick)

    def _keepAliveTick(self) -> None:
        """Sessions live but nothing sent for an interval: a KeepAlive frame."""
        self._keepalive = None
        if self.closed:
            return
        if len(self.sessions) and not self.wrote:
            self.write([encode_keepalive()])
            self.keepalives += 1
        self._scheduleKeepAlive()

    def _cancelKeepAlive(self) -> None:
        timer, self._keepalive = self._keepalive, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- closing ------------------------------------------------------------------------
    def forget(self, stream: MuxStream) -> None:
        """A session ended; an empty carrier starts its idle timer."""
        super().forget(stream)
        if not self.sessions.live:
            self._checkIdle()

    def _checkIdle(self) -> None:
        if self.closed or self.sessions.live or self.waiters or self.connecting:
            return
        if self.opened >= self.pool.max_sessions:
            self.close()  # used up: it takes no more sessions
            return
        self._idleSince = self.clock.seconds()
        if self._idle is None:
            self._idle = self.clock.callLater(self.pool.idle_timeout, self._idleDue)

    def _idleDue(self) -> None:
        """Close if still empty ``idle_timeout`` after it became so; else look again then.
        (One timer per carrier: a session that comes and goes does not cancel it.)"""
        self._idle = None
        since = self._idleSince
        if self.closed or since is None or len(self.sessions) or self.waiters:
            return  # busy: the next _checkIdle arms the timer again
        left = since + self.pool.idle_timeout - self.clock.seconds()
        if left > 1e-9:
            self._idle = self.clock.callLater(left, self._idleDue)
        else:
            self.close()

    def _cancelIdle(self) -> None:
        if self._idle is not None:
            if self._idle.active():
                self._idle.cancel()
            self._idle = None

    def close(self) -> None:
        """Close the carrier (the VMess end-of-stream chunk, then TCP close)."""
        self._cancelIdle()
        if self.closed:
            return
        self.closing = True
        self.pool._remove(self)
        self.flush()
        self.lost(None)
        if self.transport is not None:
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def lost(self, reason: Failure | None = None) -> None:
        """The carrier is gone: its streams fail, later streams get a fresh carrier."""
        self._cancelIdle()
        self._cancelKeepAlive()
        timer, self._newTimer = self._newTimer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._newQueue.clear()
        self.pool._remove(self)
        super().lost(reason)
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            w.deferred.errback(reason or Failure(ConnectionLost("the mux connection closed")))


@implementer(IHalfCloseableProtocol)
class MuxCarrierProtocol(Protocol):
    """The protocol on the carrier connection (over the VMess stream)."""

    def __init__(self, carrier: MuxCarrier) -> None:
        self.carrier = carrier

    def connectionMade(self) -> None:
        """Attach the carrier."""
        self.carrier.connected(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """Frames from the server."""
        self.carrier.dataReceived(data)

    def readConnectionLost(self) -> None:
        """The server ended the carrier: close it (its sessions end)."""
        if self.carrier.endOfInput():
            self.carrier.close()

    def writeConnectionLost(self) -> None:
        """Nothing to do."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """The carrier connection is gone."""
        if not self.carrier.closed and self.carrier.endOfInput():
            self.carrier.lost(reason)
        self.carrier._setGone()


class MuxPool:
    """Carriers shared by streams, as V2Ray's mux ClientManager.

    ``dial()`` returns a fresh ``IStreamClientEndpoint`` to the mux server for each new
    carrier. ``concurrency``: live sessions per carrier (1…1024); at most ``max_sessions``
    in one carrier's life. ``keepalive_interval``: seconds without a frame sent before a
    carrier with live sessions sends KeepAlive (0: never).
    """

    def __init__(self, dial: Callable[[], Any], concurrency: int = DEFAULT_CONCURRENCY, *,
                 reactor: Any = None, max_sessions: int = MAX_SESSIONS,
                 idle_timeout: float = IDLE_TIMEOUT,
                 keepalive_interval: float = KEEPALIVE_INTERVAL) -> None:
        if not 1 <= concurrency <= 1024:
            raise ValueError(f"mux concurrency must be 1…1024, got {concurrency}")
        self.dial = dial
        self.concurrency = concurrency
        self.reactor = resolve_reactor(reactor)
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout
        self.keepalive_interval = keepalive_interval
        self.carriers: list[MuxCarrier] = []
        #: carriers opened so far
        self.dialed = 0

    def connect(self, destination: Destination, factory: Any) -> Deferred[Any]:
        """A stream to ``destination`` on the first carrier with room, else a new one."""
        for carrier in self.carriers:
            # ``carrier.full``, inline (no waiters: the carrier is up)
            if carrier.waiters or carrier.closed or carrier.closing:
                if carrier.full:
                    continue
            elif (carrier.opened >= self.max_sessions
                  or carrier.unended >= self.concurrency):
                continue
            if carrier.connecting:
                return carrier.open(destination, factory)
            carrier._idleSince = None  # ``carrier.open``, inline
            try:
                return succeed(carrier._start(destination, factory))
            except Exception:  # noqa: BLE001
                return fail()
        carrier = MuxCarrier(self)
        self.carriers.append(carrier)
        self.dialed += 1
        d = carrier.open(destination, factory)
        carrier.dial()
        return d

    def endpoint(self, destination: Destination) -> MuxClientEndpoint:
        """An ``IStreamClientEndpoint`` to ``destination`` through this pool."""
        return MuxClientEndpoint(self, destination)

    def _remove(self, carrier: MuxCarrier) -> None:
        if carrier in self.carriers:
            self.carriers.remove(carrier)

    def close(self) -> Deferred[Any]:
        """Close every carrier; fires once their connections are gone."""
        waits = [c.whenGone() for c in list(self.carriers)]
        for carrier in list(self.carriers):
            carrier.close()
        return DeferredList(waits, consumeErrors=True)


@implementer(IStreamClientEndpoint)
class MuxClientEndpoint:
    """Connect to ``destination`` as a session on one of ``pool``'s carriers (a udp
    destination: a UDP session, each write one datagram, each ``dataReceived`` one reply)."""

    def __init__(self, pool: MuxPool, destination: Destination) -> None:
        self.pool = pool
        self.destination = destination

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        """Fires with the protocol once its session is open."""
        destination = self.destination
        if (destination.host, destination.port) not in _ADDRESSES:  # (encoded before: fine)
            try:
                encode_address(destination)
            except ValueError as e:  # UnicodeEncodeError is a ValueError
                return fail(ConnectError(f"Mux.Cool cannot carry {destination}: {e}"))
        return self.pool.connect(destination, protocolFactory)
