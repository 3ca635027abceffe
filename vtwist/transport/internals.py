"""The one module that touches Twisted's private names (a test keeps it that way).

- Twisted's ``tcp.Connection`` pauses its producer once its buffer passes one read's worth
  (64 KiB). A relay would then pause and resume the other side on nearly every read, so
  :func:`raise_write_high_water` lets the socket buffer more before it pushes back.
- ``IOpenSSLTrustRoot`` is a public interface that lives in a private module.
- The splice relay (:mod:`vtwist.tunnel.splice`) takes a socket over from its transport only
  when :func:`idle_plain_tcp` says nothing is buffered or half-closed there, and checks with
  :func:`endpoint_protocol` that a connection's bytes go unchanged to the relay's protocol.
- pyOpenSSL has no ``SSL_session_reused``; :func:`tls_session_reused` calls it through
  pyOpenSSL's private bindings (TLS resumption is observable, for tests and logs).
- Twisted's ``tcp.Port`` meets EMFILE by closing the waiting clients with its reserved
  descriptor and logging each attempt (ENFILE/ENOBUFS/ENOMEM: a log line per reactor
  iteration while the socket stays readable). :class:`AcceptBackoffPort` pauses accepting
  instead, with a backoff and one log line per interval (its ``doRead`` uses private names).
- Twisted's TCP ``write`` only queues: it registers the socket for writing and sends on the
  next reactor turn (two ``epoll_ctl`` calls and a turn per write). :class:`EagerServer` and
  :class:`EagerClient` send at once when nothing is queued, as asyncio's transports do, and
  queue only what the socket does not take. :class:`LeanTCPClientEndpoint` connects with
  them, without the endpoint's per-connection wrapping protocol and factory. Their
  ``loseConnection`` bounds the drain: Twisted waits for queued bytes to reach the kernel
  before it closes, and a peer blocked writing to us (we stopped reading when we closed)
  never takes them, so the socket would stay open for good. A connection whose queue makes
  no progress for :data:`DRAIN_LIMIT` seconds is aborted.
- ``Failure.parents`` is private state of a Failure: :class:`_EagerWrites` fills it from a
  cache on every close.
- ``EPollReactor.doPoll`` runs every readiness event inside ``log.callWithLogger`` (a
  context push and pop per event, for the legacy log's ``system`` field).
  :func:`lean_poll` makes a vtwist process's reactor call the handlers directly. Its loop
  also finishes, at the end of each turn, the closes and half-closes of connections with
  nothing queued (Twisted registers them for writing and closes from ``doWrite`` a turn
  later: two ``epoll_ctl`` calls, a zero-byte ``send`` and a turn), and runs what
  :func:`at_turn_end` was given (the access log's one flush per turn).
- The epoll reactor's ``_reads``/``_writes``/``_selectables`` bookkeeping is read to skip
  removals of what it does not watch, and kept when a dial is registered for reading and
  writing in one ``epoll_ctl``.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import error as twisted_errors
from twisted.internet import tcp
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import _WrappingProtocol
from twisted.internet.error import ConnectingCancelledError, NoProtocol, getConnectError
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory
from twisted.internet.tcp import Connection
from twisted.logger import Logger
from twisted.python import log
from zope.interface import implementer

__all__ = ["DRAIN_LIMIT", "AcceptBackoffPort", "DialTimeoutError", "EagerClient", "EagerServer",
           "IOpenSSLTrustRoot", "LeanTCPClientEndpoint",
           "WRITE_HIGH_WATER", "endpoint_protocol", "lean_poll", "at_turn_end",
           "idle_plain_tcp", "raise_write_high_water", "read_whole_units", "tls_session_reused"]

#: A relayed socket pauses its source only past this many buffered bytes. Twisted's default
#: high-water mark equals one 64 KiB read, so nearly every read would pause and resume the
#: other side (epoll churn); reads stay 64 KiB.
WRITE_HIGH_WATER = 256 * 1024

#: Seconds a closing connection's queued bytes may make no progress towards the kernel
#: before the connection is aborted (see :class:`_EagerWrites`).
DRAIN_LIMIT = 10.0

try:
    from twisted.internet.epollreactor import EPollReactor as _EPollReactor
except ImportError:  # not Linux
    _EPollReactor = None

#: epoll's events: a prompt close is dispatched as writable (4 where select lacks epoll)
_EPOLLOUT = getattr(select, "EPOLLOUT", 4)
_EPOLLIN = getattr(select, "EPOLLIN", 1)


def raise_write_high_water(transport: Any, limit: int = WRITE_HIGH_WATER) -> None:
    """Let the socket under ``transport`` (through any wrapping layers) buffer ``limit`` bytes
    before it pauses its producer. Reads keep their size."""
    for _ in range(8):
        if isinstance(transport, _EagerWrites) and limit == WRITE_HIGH_WATER:
            return  # vtwist's own connections have this limit already
        if isinstance(transport, Connection):
            def full(t: Connection = transport) -> bool:
                return len(t.dataBuffer) + t._tempDataLen > limit

            transport._isSendBufferFull = full  # type: ignore[method-assign]
            return
        transport = getattr(transport, "lowerTransport", None) or getattr(
            transport, "transport", None)
        if transport is None:
            return


def read_whole_units(transport: Any, unit: int) -> None:
    """Let the socket under ``transport`` (through any wrapping layers) read the largest
    multiple of ``unit`` bytes up to Twisted's 64 KiB at a time: a codec that seals each read
    in chunks of at most ``unit`` bytes then makes no small remainder chunk per read (a 64 KiB
    read is 4 Shadowsocks chunks of 0x3FFF plus one of 4 bytes, two more AEAD calls)."""
    for _ in range(8):
        if isinstance(transport, Connection):
            size = Connection.bufferSize // unit * unit
            if size:
                transport.bufferSize = size
            return
        transport = getattr(transport, "lowerTransport", None) or getattr(
            transport, "transport", None)
        if transport is None:
            return


def idle_plain_tcp(transport: Any) -> bool:
    """Whether ``transport`` is a plain TCP connection (no TLS, no wrapping layer) that is
    open both ways and has nothing waiting in its write buffer: its socket can be handed to
    a kernel-to-kernel relay without reordering or losing a byte."""
    if not isinstance(transport, Connection) or transport.TLS:
        return False
    if not transport.connected or transport.disconnecting:
        return False
    if transport._writeDisconnecting or transport._writeDisconnected:
        return False
    return len(transport.dataBuffer) == transport.offset and transport._tempDataLen == 0


def endpoint_protocol(protocol: Any) -> Any:
    """The protocol inside the pass-through wrapper Twisted's client endpoints put around it
    (``dataReceived`` forwarded unchanged), or ``protocol`` itself."""
    for _ in range(4):
        if not isinstance(protocol, _WrappingProtocol):
            break
        protocol = protocol._wrappedProtocol
    return protocol


def tls_session_reused(connection: Any) -> bool:
    """True when the handshake of ``connection`` (an ``OpenSSL.SSL.Connection``) resumed."""
    from OpenSSL._util import lib

    return bool(lib.SSL_session_reused(connection._ssl))


#: accept() errors that mean "no descriptor or memory for one more connection right now"
EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: accept() errors about one connection only (it went away, netfilter refused it): go on
TRANSIENT = frozenset({errno.ECONNABORTED, errno.EPERM, errno.EPROTO, errno.EINTR})
_accept_log = Logger(namespace="vtwist.transport.tcp")


#: Exception class -> the qualified names of its classes (``Failure.parents``, read-only).
#: ``tcp.Connection.connectionLost`` asks ``reason.check(...)``, and a Failure lists its
#: exception's classes with ``reflect.qual`` over the whole hierarchy the first time, once
#: per closed connection; the exception classes of closes are few.
_PARENTS: dict[Any, list[str]] = {}


class _EagerWrites:
    """``write``/``writeSequence`` of a TCP connection that send at once when nothing is
    queued; what the socket does not take is queued as usual (and so is everything while
    something is queued, while TLS is started on the connection, or once it is closing)."""

    #: the pending drain check of a closing connection, and what was queued at the last one
    _drainCheck: IDelayedCall | None = None
    _drainQueued = 0

    def _queuedBytes(self) -> int:
        t: Any = self
        return len(t.dataBuffer) - t.offset + t._tempDataLen

    def _promptly(self) -> list[Any] | None:
        """The reactor's list of prompt closes (:func:`lean_poll`) when this connection can
        finish a close or half-close without waiting to be writable: nothing queued, no
        producer that ``doWrite`` would ask for more (one that is not streaming, or paused),
        no TLS, open. Else None (Twisted's way: register for writing, then close from
        ``doWrite``)."""
        t: Any = self
        soon = getattr(t.reactor, "_promptCloses", None)
        if soon is None or t.TLS or not t.connected:
            return None
        if t.producer is not None and (not t.streamingProducer or t.producerPaused):
            return None
        if t.disconnecting or t._writeDisconnected or t._tempDataLen:
            return None
        if len(t.dataBuffer) != t.offset:
            return None
        return soon  # type: ignore[no-any-return]

    def loseConnection(self, *args: Any) -> None:  # noqa: N802 - Twisted's name
        """Close once the queue drains, as Twisted does; abort if it stops draining. With
        nothing queued the close happens at the end of this reactor turn without the round
        through writability (two ``epoll_ctl`` and a zero-byte ``send`` fewer)."""
        soon = self._promptly()
        t: Any = self
        if soon is not None:
            t.stopReading()
            t.disconnecting = 1
            soon.append(self)
            return
        super().loseConnection(*args)  # type: ignore[misc]
        if self._drainCheck is None and t.connected and self._queuedBytes():
            self._drainQueued = self._queuedBytes()
            self._drainCheck = t.reactor.callLater(DRAIN_LIMIT, self._checkDrain)

    def loseWriteConnection(self) -> None:  # noqa: N802 - Twisted's name
        """Half-close once the queue drains, as Twisted does; with nothing queued, at the end
        of this reactor turn (see :meth:`loseConnection`)."""
        soon = self._promptly()
        if soon is None:
            super().loseWriteConnection()  # type: ignore[misc]
            return
        t: Any = self
        t._writeDisconnecting = True
        soon.append(self)

    def doWrite(self) -> Any:  # noqa: N802 - Twisted's name
        """Twisted's ``doWrite``, without the zero-byte ``send`` it makes when nothing is
        queued (a close or half-close waiting for writability, or a prompt one)."""
        t: Any = self
        if t._tempDataLen or len(t.dataBuffer) != t.offset:
            return super().doWrite()  # type: ignore[misc]
        t.dataBuffer = b""
        t.offset = 0
        t.stopWriting()
        if t.producer is not None and (not t.streamingProducer or t.producerPaused):
            t.producerPaused = False
            t.producer.resumeProducing()
        elif t.disconnecting:
            return t._postLoseConnection()
        elif t._writeDisconnecting:
            t._writeDisconnected = True
            return t._closeWriteConnection()
        return None

    def _checkDrain(self) -> None:
        t: Any = self
        self._drainCheck = None
        queued = self._queuedBytes()
        if not t.connected or not queued:
            return
        if queued < self._drainQueued:  # slow but moving: give it another interval
            self._drainQueued = queued
            self._drainCheck = t.reactor.callLater(DRAIN_LIMIT, self._checkDrain)
            return
        t.abortConnection()

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        """Drop the drain check with the connection; give ``reason`` its exception's class
        names from a cache (see :data:`_PARENTS`)."""
        if self._drainCheck is not None:
            self._drainCheck.cancel()
            self._drainCheck = None
        if getattr(reason, "_parents", 0) is None:  # a Failure that has not listed them yet
            names = _PARENTS.get(reason.type)
            if names is None:
                names = _PARENTS[reason.type] = reason.parents
            else:
                reason.parents = names
        super().connectionLost(reason)  # type: ignore[misc]

    def stopReading(self) -> None:  # noqa: N802 - Twisted's name
        """Twisted's, without its three calls deep when the reactor does not watch us for
        reading (a close asks several times)."""
        reactor = self.reactor  # type: ignore[attr-defined]
        if type(reactor) is _EPollReactor:  # its _reads holds descriptor numbers
            fd = self.fileno()  # type: ignore[attr-defined]
            if fd != -1 and fd not in reactor._reads:
                return
        reactor.removeReader(self)

    def stopWriting(self) -> None:  # noqa: N802 - Twisted's name
        """Twisted's, without its three calls deep when the reactor does not watch us for
        writing (every flush and close asks)."""
        reactor = self.reactor  # type: ignore[attr-defined]
        if type(reactor) is _EPollReactor:  # its _writes holds descriptor numbers
            fd = self.fileno()  # type: ignore[attr-defined]
            if fd != -1 and fd not in reactor._writes:
                return
        reactor.removeWriter(self)

    def _closeSocket(self, orderly: bool) -> None:  # noqa: N802 - Twisted's name
        """Close the socket; after our half-close without Twisted's ``shutdown(2)`` first:
        our FIN went out with that half-close, and once the peer's came too the call only
        fails (ENOTCONN)."""
        t: Any = self
        if orderly and t._writeDisconnected:
            try:
                t.socket.close()
            except OSError:
                pass
            return
        super()._closeSocket(orderly)  # type: ignore[misc]

    def _isSendBufferFull(self) -> bool:  # noqa: N802 - Twisted's name
        """Pause the producer past :data:`WRITE_HIGH_WATER` (see raise_write_high_water)."""
        t: Any = self
        return len(t.dataBuffer) + t._tempDataLen > WRITE_HIGH_WATER

    def _queued(self) -> bool:
        t: Any = self
        return bool(t._tempDataLen or t.dataBuffer or not t.connected or t.disconnecting
                    or t._writeDisconnecting or t._writeDisconnected or t.TLS)

    def write(self, data: bytes) -> None:
        """Send ``data`` now if nothing is queued, else queue it."""
        if self._queued():
            return super().write(data)  # type: ignore[misc]
        try:
            sent = self.socket.send(data)  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:  # the queued write meets the error again and closes as usual
            return super().write(data)  # type: ignore[misc]
        if sent < len(data):
            super().write(data[sent:])  # type: ignore[misc]
        return None

    def writeSequence(self, iovec: Any) -> None:  # noqa: N802 - Twisted's name
        """Send the buffers now (one ``sendmsg``) if nothing is queued, else queue them."""
        if self._queued():
            return super().writeSequence(iovec)  # type: ignore[misc]
        iovec = list(iovec)
        if len(iovec) > 64:  # well under IOV_MAX
            return self.write(b"".join(iovec))
        try:
            sent = self.socket.sendmsg(iovec)  # type: ignore[attr-defined]
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            return super().writeSequence(iovec)  # type: ignore[misc]
        total = sum(map(len, iovec))
        if sent < total:
            super().write(b"".join(iovec)[sent:])  # type: ignore[misc]
        return None


class EagerServer(_EagerWrites, tcp.Server):
    """An accepted TCP connection whose writes go out at once when nothing is queued."""

    #: the client's address as the listening port built it for ``buildProtocol``
    peerAddress: Any = None

    def getPeer(self) -> Any:  # noqa: N802 - Twisted's name
        """The client's address: the one built at accept time (Twisted builds a new one on
        every call; addresses are immutable)."""
        peer = self.peerAddress
        return peer if peer is not None else super().getPeer()


class EagerClient(_EagerWrites, tcp.Client):
    """A connecting TCP connection whose writes go out at once when nothing is queued; it
    tells its :class:`_Connecting` factory once the protocol is connected.

    It also connects with fewer system calls than Twisted's ``doConnect``, which runs twice
    and each time asks ``SO_ERROR`` and calls ``connect`` again, then unregisters the socket
    and registers it anew for reading (five ``epoll_ctl`` calls in all). Here the first call
    only connects and the second only asks ``SO_ERROR``; the socket, registered for reading
    and writing while connecting as in Twisted, just stops writing once connected (three
    ``epoll_ctl`` calls). The socket is made non-blocking when it is created."""

    _connectStarted = False

    def resolveAddress(self) -> None:  # noqa: N802 - Twisted's name
        """Connect to an IP literal without a Deferred in between (a name: as Twisted)."""
        t: Any = self
        if t._requiresResolution:
            super().resolveAddress()  # type: ignore[misc]
            return
        try:
            t._setRealAddress(t.addr)
        except Exception as e:  # noqa: BLE001 - as Twisted's errback: the attempt fails
            t.failIfNotConnected(e)

    def createInternetSocket(self) -> socket.socket:  # noqa: N802 - Twisted's name
        """A non-blocking socket in one system call where the platform allows it."""
        nonblock = getattr(socket, "SOCK_NONBLOCK", 0)
        if not nonblock:
            return super().createInternetSocket()
        t: Any = self
        return socket.socket(t.addressFamily, t.socketType | nonblock)

    def doConnect(self) -> None:  # noqa: N802 - Twisted's name
        """Start connecting (first call) or finish (the socket became ready)."""
        t: Any = self
        t.doWrite = t.doRead = self.doConnect
        if not hasattr(self, "connector"):  # failed before a scheduled call ran
            return
        if self._connectStarted:
            code = t.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        else:
            self._connectStarted = True
            try:
                code = t.socket.connect_ex(t.realAddress)
            except OSError as e:
                code = e.args[0]
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
                _watch_both(t)
                return
            if code == errno.EISCONN:
                code = 0
        if code:
            t.failIfNotConnected(getConnectError((code, os.strerror(code))))
            return
        del t.doWrite, t.doRead
        t.stopWriting()
        self._connectDone()  # registers reading, already the case after a wait

    def _connectDone(self) -> None:
        super()._connectDone()
        if self.connected and self.protocol is not None:
            self.connector.factory.made(self.protocol)


def _watch_both(transport: Any) -> None:
    """Register ``transport`` for reading and writing: with one ``epoll_ctl`` on an epoll
    reactor (``startReading`` then ``startWriting`` take two), Twisted's way elsewhere."""
    reactor = transport.reactor
    fd = transport.fileno()
    if type(reactor) is not _EPollReactor or fd in reactor._reads or fd in reactor._writes:
        transport.startReading()
        transport.startWriting()
        return
    reactor._poller.register(fd, _EPOLLIN | _EPOLLOUT)
    reactor._reads.add(fd)  # the reactor's own bookkeeping, as its _add keeps it
    reactor._writes.add(fd)
    reactor._selectables[fd] = transport


class DialTimeoutError(twisted_errors.TimeoutError):
    """A dial given a deadline (``connectWithin``) did not connect within it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(string=f"no connection within {seconds:g}s")
        self.seconds = seconds

    def __str__(self) -> str:
        return f"no connection within {self.seconds:g}s"


class _LeanConnector(tcp.Connector):
    def _makeTransport(self) -> EagerClient:
        return EagerClient(self.host, self.port, self.bindAddress, self, self.reactor)

    #: the timeout is a caller's deadline (``connectWithin``): it fails with DialTimeoutError
    deadline = False

    def connect(self) -> None:
        """As Twisted's ``BaseConnector.connect``, with the timeout's error saying whose
        deadline it was (:attr:`deadline`). The attempt starts on the next reactor turn, as
        in Twisted: starting it in this one lets a door that dials itself (a dokodemo
        following redirects, reached directly) grow a chain of connections faster than the
        closing of its first link can undo it."""
        if self.state != "disconnected":
            raise RuntimeError("can't connect in this state")
        self.state = "connecting"
        if not self.factoryStarted:
            self.factory.doStart()
            self.factoryStarted = 1
        transport: Any = self._makeTransport()
        self.transport = transport
        if self.timeout is not None:
            why = (DialTimeoutError(self.timeout) if self.deadline
                   else twisted_errors.TimeoutError())
            self.timeoutID = self.reactor.callLater(self.timeout, transport.failIfNotConnected,
                                                    why)
        self.factory.startedConnecting(self)


class _Connecting(ClientFactory):
    """One connection attempt: builds the application's protocol (no wrapping protocol)
    and fires :attr:`deferred` with it once connected, or with the failure."""

    noisy = False
    connector: _LeanConnector | None = None

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.deferred: Deferred[Any] = Deferred(canceller=self._cancel)

    def _cancel(self, d: Deferred[Any]) -> None:
        assert self.connector is not None
        d.errback(ConnectingCancelledError(self.connector.getDestination()))
        self.connector.stopConnecting()

    def doStart(self) -> None:  # noqa: N802 - Twisted's names
        self.factory.doStart()

    def doStop(self) -> None:  # noqa: N802
        self.factory.doStop()

    def buildProtocol(self, addr: Any) -> Any:  # noqa: N802
        try:
            protocol = self.factory.buildProtocol(addr)
            if protocol is None:
                raise NoProtocol()
        except BaseException:  # noqa: BLE001 - reported through the Deferred, as Twisted does
            self.deferred.errback()
            return None
        return protocol

    def made(self, protocol: Any) -> None:
        if not self.deferred.called:
            self.deferred.callback(protocol)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:  # noqa: N802
        if not self.deferred.called:
            self.deferred.errback(reason)

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:  # noqa: N802
        if not self.deferred.called:  # lost inside connectionMade
            self.deferred.errback(reason)


@implementer(IStreamClientEndpoint)
class LeanTCPClientEndpoint:
    """``TCP4ClientEndpoint``/``TCP6ClientEndpoint`` for an IP literal on a POSIX reactor,
    connecting with :class:`EagerClient`; the Deferred fires with the application's own
    protocol, which the transport calls directly (half-close included)."""

    def __init__(self, reactor: Any, host: str, port: int, timeout: float | None = 30,
                 bindAddress: Any = None) -> None:  # noqa: N803
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.bindAddress = bindAddress

    def connect(self, protocolFactory: Any) -> Deferred[Any]:  # noqa: N803
        """Connect; fires with the protocol ``protocolFactory`` built."""
        return self.connectWithin(protocolFactory, None)

    def connectWithin(self, protocolFactory: Any, seconds: float | None) -> Deferred[Any]:  # noqa: N802,N803
        """:meth:`connect`, failing with a ``TimeoutError`` that says so after ``seconds``
        when that is sooner than the endpoint's own timeout: a caller with a deadline of its
        own (the tunnel's ``connect_timeout``) needs no second timer."""
        try:
            connecting = _Connecting(protocolFactory)
            timeout = self.timeout
            connector = _LeanConnector(self.host, self.port, connecting,
                                       timeout, self.bindAddress, self.reactor)
            if seconds is not None and (timeout is None or seconds < timeout):
                connector.timeout, connector.deadline = seconds, True
            connecting.connector = connector
            connector.connect()
            return connecting.deferred
        except BaseException:  # noqa: BLE001
            return fail()


def _finish_prompt_closes(soon: list[Any], drdw: Any) -> None:
    """Run the closes and half-closes asked this turn as if each connection had become
    writable (Twisted's ``doWrite`` then closes it, and the reactor disconnects it): those
    asked while these run wait for the next turn, which polls without waiting."""
    batch = soon[:]
    del soon[:]
    for transport in batch:
        if transport.disconnected or transport._aborting:
            continue  # closed another way meanwhile (aborted, reset by the peer)
        try:
            drdw(transport, transport.fileno(), _EPOLLOUT)
        except BaseException:  # noqa: BLE001 - as the poll loop: log, go on
            if isinstance(sys.exc_info()[1], KeyboardInterrupt):
                raise
            log.err()


def _run_turn_end(calls: list[Callable[[], None]]) -> None:
    batch = calls[:]
    del calls[:]
    for call in batch:
        try:
            call()
        except BaseException:  # noqa: BLE001 - as the poll loop: log, go on
            if isinstance(sys.exc_info()[1], KeyboardInterrupt):
                raise
            log.err()


def at_turn_end(reactor: Any, call: Callable[[], None]) -> bool:
    """Have a running lean-polled ``reactor`` (:func:`lean_poll`) call ``call`` at the end
    of this turn, after every readiness handler (True); False for other reactors, or one
    not running: the caller does it now. Each request is one call: the caller keeps track
    of what it has asked for."""
    pending = getattr(reactor, "_turnEnd", None)
    if pending is None or not reactor.running:
        return False
    pending.append(call)
    return True


def lean_poll(reactor: Any) -> bool:
    """Make an epoll ``reactor`` call readiness handlers directly rather than inside
    ``log.callWithLogger`` (legacy log lines from inside them then say ``-`` for their
    system). True when done; other reactors are left alone."""
    if _EPollReactor is None or type(reactor) is not _EPollReactor:
        return False
    drdw = reactor._doReadOrWrite
    selectables = reactor._selectables
    poller = reactor._poller
    soon: list[Any] = []
    reactor._promptCloses = soon  # see _EagerWrites.loseConnection
    turn_end: list[Callable[[], None]] = []
    reactor._turnEnd = turn_end  # see at_turn_end

    def doPoll(timeout: float | None) -> None:  # noqa: N802 - Twisted's name
        if soon or turn_end:
            timeout = 0
        try:
            events = poller.poll(-1 if timeout is None else timeout, len(selectables))
        except InterruptedError:
            events = ()
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                drdw(selectable, fd, event)
            except BaseException:  # noqa: BLE001 - as callWithLogger: log, go on
                if isinstance(sys.exc_info()[1], KeyboardInterrupt):
                    raise
                log.err()
        if soon:
            _finish_prompt_closes(soon, drdw)
        if turn_end:
            _run_turn_end(turn_end)

    reactor.doPoll = reactor.doIteration = doPoll
    return True


class AcceptBackoffPort(tcp.Port):
    """A listening TCP port that survives descriptor exhaustion (its connections are
    :class:`EagerServer`).

    When ``accept`` fails with EMFILE, ENFILE, ENOBUFS or ENOMEM it stops reading the
    listening socket and tries again after a backoff (``backoff_min`` doubling up to
    ``backoff_max``): the waiting clients stay in the kernel's backlog and are accepted once
    descriptors free up, the reactor does not spin, and established connections keep
    flowing. It logs the first failure at once, then at most one line per ``log_interval``
    (with the number of failed attempts since), and one line when accepting works again.
    """

    transport = EagerServer
    backoff_min = 0.05
    backoff_max = 1.0
    log_interval = 10.0

    exhausted_attempts = 0  # failed accepts since the last log line
    exhausted_total = 0
    _backoff = 0.0
    _resume: IDelayedCall | None = None
    _logged_at: float | None = None
    _paused_since: float | None = None
    _warned = False

    def doRead(self) -> None:
        """Accept what is waiting, up to ``numberAccepts`` (Twisted's scaling)."""
        accepted = 0
        for _ in range(self.numberAccepts):
            try:
                skt, addr = self.socket.accept()
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                if e.errno in TRANSIENT:
                    continue
                if e.errno in EXHAUSTED:
                    self._exhausted(e.errno)
                    return
                _accept_log.error("{port}: accept failed: {error}", port=self._where(),
                                  error=e)
                break
            accepted += 1
            if self._paused_since is not None:
                self._recovered()
            if len(addr) == 4:  # IPv6: keep the scope ID
                host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
                addr = (host[0], *addr[1:])
            peer = self._buildAddr(addr)
            protocol = self.factory.buildProtocol(peer)
            if protocol is None:
                skt.close()
                continue
            s = self.sessionno
            self.sessionno = s + 1
            transport = self.transport(skt, protocol, addr, self, s, self.reactor)
            transport.peerAddress = peer
            protocol.makeConnection(transport)
        if accepted == self.numberAccepts:
            self.numberAccepts += 20
        else:
            self.numberAccepts = max(1, accepted)

    def _where(self) -> str:
        host = self.getHost()
        return f"{getattr(host, 'host', '?')}:{getattr(host, 'port', '?')}"

    def _exhausted(self, code: int) -> None:
        now = self.reactor.seconds()
        self.exhausted_attempts += 1
        self.exhausted_total += 1
        if self._paused_since is None:
            self._paused_since = now
        if self._logged_at is None or now - self._logged_at >= self.log_interval:
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            _accept_log.warn(
                "{port}: cannot accept a connection ({code}, {attempts} attempt(s) since the "
                "last message; descriptor limit {soft}/{hard}): accepting again as "
                "descriptors free up; established connections go on",
                port=self._where(), code=errno.errorcode.get(code, code),
                attempts=self.exhausted_attempts, soft=soft, hard=hard)
            self._logged_at = now
            self._warned = True
            self.exhausted_attempts = 0
        self._backoff = min(self.backoff_max, max(self.backoff_min, self._backoff * 2))
        self.stopReading()
        if self._resume is None or not self._resume.active():
            self._resume = self.reactor.callLater(self._backoff, self._resumeAccepting)

    def _resumeAccepting(self) -> None:
        self._resume = None
        if self.connected and not self.disconnecting:
            self.startReading()

    def _recovered(self) -> None:
        # at most one "again" line per warning line: two lines per interval at worst
        if self._warned:
            paused = self.reactor.seconds() - (self._paused_since or 0.0)
            _accept_log.info("{port}: accepting connections again after {paused:.1f} s",
                             port=self._where(), paused=paused)
            self._warned = False
        self._paused_since = None
        self._backoff = 0.0

    def connectionLost(self, reason: Any) -> None:
        """The port closed: no resume pending."""
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        super().connectionLost(reason)


def adopt_backoff_port(reactor: Any, fd: int, family: socket.AddressFamily,
                       factory: Any) -> AcceptBackoffPort:
    """``reactor.adoptStreamPort`` with an :class:`AcceptBackoffPort`: listen on an already
    bound, listening, non-blocking socket (``fd`` is duplicated; the caller closes its own)."""
    port = AcceptBackoffPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.startListening()
    return port
