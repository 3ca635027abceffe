"""The control channel between the ``--workers`` supervisor and each worker.

One ``AF_UNIX`` stream socket pair per worker: the worker gets its end as fd
:data:`CONTROL_FD`. Messages are JSON objects, each with a 4-byte big-endian length in front
(Twisted's ``Int32StringReceiver`` framing).

* worker -> supervisor: ``{"stats": {...}}`` (a :func:`vtwist.app.statsync.take` message,
  every :data:`~vtwist.app.statsync.INTERVAL` and once more when the worker stops);
  ``{"reply": ID, "error": null | "why"}`` answers a request.
* supervisor -> worker: ``{"request": ID, "op": "restart_logger"}``.

The worker writes with plain blocking sends (a timeout of :data:`SEND_TIMEOUT`) on a socket
that Twisted never owns, so its last push still goes out after the reactor dropped every
connection at shutdown; it reads requests through a small reader the reactor watches. The
supervisor's end is an ordinary Twisted connection (:class:`SupervisorChannel`).
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import implementer

log = Logger(namespace="vtwist.workers")

#: the control socket in a worker
CONTROL_FD = 5
#: the largest message either side accepts
MAX_MESSAGE = 64 * 1024 * 1024
#: a worker gives up a send the supervisor does not take within this many seconds
SEND_TIMEOUT = 5.0
_LENGTH = struct.Struct("!I")


def encode(message: dict[str, Any]) -> bytes:
    """One framed message."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LENGTH.pack(len(body)) + body


class ChannelClosed(Exception):
    """The other end of a control channel went away before it answered."""


# -- the supervisor's end --------------------------------------------------------------------
class SupervisorChannel(Int32StringReceiver):
    """The supervisor's end of one worker's channel: ``on_message(dict)`` for what the
    worker sends, ``on_lost()`` once it is gone; :meth:`request` asks the worker something."""

    MAX_LENGTH = MAX_MESSAGE

    def __init__(self, on_message: Callable[[dict[str, Any]], None],
                 on_lost: Callable[[], None]) -> None:
        self.on_message = on_message
        self.on_lost = on_lost
        self.pending: dict[int, defer.Deferred[None]] = {}
        self.next_id = 1
        self.gone = False

    def stringReceived(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        """One message from the worker."""
        try:
            message = json.loads(data)
        except ValueError:
            log.error("workers: a bad control message; closing the channel")
            self.transport.loseConnection()
            return
        if not isinstance(message, dict):
            return
        if "reply" in message:
            waiter = self.pending.pop(message["reply"], None)
            if waiter is not None:
                error = message.get("error")
                if error:
                    waiter.errback(RuntimeError(str(error)))
                else:
                    waiter.callback(None)
            return
        self.on_message(message)

    def request(self, op: str) -> defer.Deferred[None]:
        """Ask the worker to do ``op``; fires when it answered (fails with its error, or
        with :class:`ChannelClosed` when the worker went away first)."""
        waiter: defer.Deferred[None] = defer.Deferred()
        if self.gone:
            waiter.errback(ChannelClosed("the worker is gone"))
            return waiter
        request_id, self.next_id = self.next_id, self.next_id + 1
        self.pending[request_id] = waiter
        self.sendString(json.dumps({"request": request_id, "op": op}).encode())
        return waiter

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - Twisted's name
        """The worker ended (or closed its end): fail what it did not answer."""
        self.gone = True
        pending, self.pending = self.pending, {}
        for waiter in pending.values():
            waiter.errback(ChannelClosed("the worker is gone"))
        self.on_lost()


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the worker's end) of a new control channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def adopt(reactor: Any, sock: socket.socket, channel: SupervisorChannel) -> None:
    """Run ``channel`` on the supervisor's end ``sock`` (which is closed: Twisted keeps its
    own copy)."""
    from twisted.internet.protocol import Factory

    factory = Factory.forProtocol(lambda: channel)
    try:
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, factory)
    finally:
        sock.close()


# -- the worker's end ------------------------------------------------------------------------
@implementer(IReadDescriptor)
class WorkerChannel:
    """The worker's end: :meth:`send` (blocking, from the reactor thread) and requests read
    as the reactor sees them readable, answered by ``handlers[op]()`` (an exception is the
    error the supervisor gets)."""

    def __init__(self, fd: int, reactor: Any,
                 handlers: dict[str, Callable[[], None]] | None = None) -> None:
        self.sock = socket.socket(fileno=fd)
        self.sock.settimeout(SEND_TIMEOUT)
        self.reactor = reactor
        self.handlers = handlers or {}
        self.buffer = b""
        self.closed = False

    # IReadDescriptor
    def fileno(self) -> int:
        """The socket's descriptor (-1 once closed)."""
        return -1 if self.closed else self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        """For Twisted's log lines."""
        return "control"

    def doRead(self) -> None:  # noqa: N802 - Twisted's name
        """Read what the supervisor sent and answer each complete request."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:  # the supervisor is gone (PR_SET_PDEATHSIG stops this process)
            self.reactor.removeReader(self)
            return
        self.buffer += data
        while len(self.buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self.buffer)
            if size > MAX_MESSAGE:
                self.close()
                return
            if len(self.buffer) < _LENGTH.size + size:
                break
            body = self.buffer[_LENGTH.size:_LENGTH.size + size]
            self.buffer = self.buffer[_LENGTH.size + size:]
            self._handle(body)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        """The reactor let go of this reader (shutdown): the socket stays open for the
        last push."""

    # the channel
    def start(self) -> None:
        """Start reading requests."""
        self.reactor.addReader(self)

    def _handle(self, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return
        if not isinstance(message, dict) or "request" not in message:
            return
        handler = self.handlers.get(str(message.get("op")))
        error: str | None = None
        if handler is None:
            error = f"unknown request {message.get('op')!r}"
        else:
            try:
                handler()
            except Exception as e:  # noqa: BLE001 - reported to the supervisor
                error = str(e) or type(e).__name__
        self.send({"reply": message["request"], "error": error})

    def send(self, message: dict[str, Any]) -> bool:
        """Send ``message`` to the supervisor; False (and the channel closed) if it could
        not be sent whole."""
        if self.closed:
            return False
        try:
            self.sock.sendall(encode(message))
            return True
        except OSError as e:  # a timeout too: a half-sent message ends the channel
            log.warn("workers: the control channel failed ({why}); counters are no "
                     "longer pushed", why=e)
            self.close()
            return False

    def close(self) -> None:
        """Stop reading and close the socket."""
        if self.closed:
            return
        try:
            self.reactor.removeReader(self)
        except Exception:  # noqa: BLE001 - not registered (any more)
            pass
        self.closed = True
        self.sock.close()
