"""UDP sockets the ``--workers`` supervisor holds for its workers, so UDP flows stay put.

The kernel spreads a port's datagrams over the sockets bound to it with ``SO_REUSEPORT`` by
a hash of the 4-tuple over the sockets in the group *at that moment*. If every worker bound
its own socket, a worker that dies would take its socket out of the group and its restart
would put a new one in at another place: the flows of the other workers would move too (for
two workers, all of them) and their mKCP and QUIC sessions would break.

So the supervisor creates the workers' UDP sockets and keeps them:

* A worker that listens on a UDP port asks for it (:func:`held_socket`, called by
  :func:`vtwist.transport.reuseport.listen_udp`) over a ``SOCK_SEQPACKET`` pair on fd
  :data:`SLOTS_FD`. The first ask for a port binds one socket per worker index, all at once
  and in index order, so the group is whole from its first datagram; each worker receives
  its own (``SCM_RIGHTS``) and adopts a copy.
* A worker that dies leaves its socket in the supervisor's hands: its flows wait there
  until it is back (:data:`~vtwist.app.workers.RESTART_DELAY`) and nobody else's move. The
  restarted worker asks again and gets the same socket. A reload that keeps the port keeps
  the socket too (the old listener's copy closes, the new one adopts the same socket).
* A port a reload removed: :meth:`UDPSlots.sweep`, :data:`SWEEP_DELAY` after the reload,
  closes each held socket that its running worker no longer has open (``/proc/PID/fd``).
* A worker that gets no answer within :data:`ANSWER_TIMEOUT`, or an error (the port cannot
  be bound), or no channel at all, binds the port itself as before (and a bind error is
  then reported as usual).

Wire: the worker sends ``{"id": N, "udp": [interface, port]}`` (JSON, one packet); the
supervisor answers ``{"id": N, "ok": true}`` with the descriptor attached, or
``{"id": N, "error": "why"}`` without one (a late answer to an earlier ``id`` is dropped).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from typing import Any

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

log = Logger(namespace="vtwist.workers")

#: the worker's end of its slot channel
SLOTS_FD = 6
#: a worker waits this long for the supervisor's answer before binding the port itself
ANSWER_TIMEOUT = 5.0
#: after a reload, the supervisor looks this many seconds later which held sockets the
#: workers dropped
SWEEP_DELAY = 10.0
#: the largest request or answer (a port request is ~40 bytes)
MAX_PACKET = 4096

Key = tuple[str, int]


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the worker's end) of one worker's slot channel."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


# -- the supervisor's side -------------------------------------------------------------------
@implementer(IReadDescriptor)
class _SlotChannel:
    """The supervisor's end of one worker's channel, read by the reactor."""

    def __init__(self, slots: UDPSlots, index: int, sock: socket.socket) -> None:
        self.slots = slots
        self.index = index
        self.sock = sock
        sock.setblocking(False)

    def fileno(self) -> int:
        """The channel's descriptor (-1 once closed)."""
        return self.sock.fileno()

    def logPrefix(self) -> str:  # noqa: N802 - Twisted's name
        """For the reactor's log lines."""
        return "udp-slots"

    def doRead(self) -> None:  # noqa: N802 - Twisted's name
        """Answer one request; the worker's end closed: forget this channel."""
        try:
            packet = self.sock.recv(MAX_PACKET)
        except BlockingIOError:
            return
        except OSError:
            packet = b""
        if not packet:
            self.close()
            return
        answer, fd = self.slots.answer(self.index, packet)
        try:
            socket.send_fds(self.sock, [json.dumps(answer).encode()], [fd] if fd >= 0 else [])
        except OSError as e:  # the worker is gone, or cannot take it: it binds the port
            log.debug("udp slots: no answer to worker {index}: {e}", index=self.index, e=e)

    def connectionLost(self, reason: Any) -> None:  # noqa: N802 - Twisted's name
        """The reactor dropped the channel."""
        self.close()

    def close(self) -> None:
        """Stop reading and close the supervisor's end."""
        if self.sock.fileno() >= 0:
            with contextlib.suppress(Exception):
                self.slots.reactor.removeReader(self)
            self.sock.close()
        if self.slots.channels.get(self.index) is self:
            del self.slots.channels[self.index]


class UDPSlots:
    """The supervisor's UDP sockets: for each (interface, port) a worker asked for, one
    socket per worker index (None where :meth:`sweep` closed it)."""

    def __init__(self, reactor: Any, count: int) -> None:
        self.reactor = reactor
        self.count = count
        self.held: dict[Key, list[socket.socket | None]] = {}
        self.channels: dict[int, _SlotChannel] = {}
        self._sweep: Any = None

    def channel(self, index: int) -> socket.socket:
        """A new channel for (a new process of) worker ``index``: the worker's end, to pass
        on :data:`SLOTS_FD` (the caller closes it once the worker has it)."""
        self.drop_channel(index)
        mine, theirs = channel_pair()
        channel = self.channels[index] = _SlotChannel(self, index, mine)
        self.reactor.addReader(channel)
        return theirs

    def drop_channel(self, index: int) -> None:
        """Close worker ``index``'s channel (its process did not start)."""
        channel = self.channels.get(index)
        if channel is not None:
            channel.close()

    def answer(self, index: int, packet: bytes) -> tuple[dict[str, Any], int]:
        """What to send back for ``packet`` from worker ``index``: the answer and the
        descriptor to attach (-1: none)."""
        ident = None
        try:
            request = json.loads(packet)
            ident = request.get("id")
            interface, port = request["udp"]
            if not isinstance(interface, str) or type(port) is not int or \
                    not 0 < port < 65536 or not 0 <= index < self.count:
                raise ValueError("expected [interface, port]")
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            return {"id": ident, "error": f"bad request: {e}"}, -1
        from twisted.internet.error import CannotListenError

        try:
            sock = self.socket_for(index, (interface, port))
        except CannotListenError as e:
            return {"id": ident, "error": str(e.socketError)}, -1
        return {"id": ident, "ok": True}, sock.fileno()

    def socket_for(self, index: int, key: Key) -> socket.socket:
        """Worker ``index``'s socket for ``key``, binding the whole group (every index, in
        order) the first time; raises ``CannotListenError``."""
        from vtwist.transport.reuseport import bound_socket

        group = self.held.get(key)
        if group is None:
            group = self.held[key] = [None] * self.count
        made: list[int] = []
        try:
            for n, sock in enumerate(group):
                if sock is None:
                    group[n] = bound_socket(socket.SOCK_DGRAM, key[1], key[0])
                    made.append(n)
        except BaseException:
            # none of them: a socket nobody reads would take its share of the flows
            for n in made:
                group[n].close()  # type: ignore[union-attr]
                group[n] = None
            if not any(group):
                del self.held[key]
            raise
        sock = group[index]
        assert sock is not None
        return sock

    def sweep_later(self, pids: Any) -> None:
        """Look :data:`SWEEP_DELAY` from now which held sockets the workers dropped
        (``pids()``: worker index -> pid of the workers running then)."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = self.reactor.callLater(SWEEP_DELAY, lambda: self.sweep(pids()))

    def sweep(self, pids: dict[int, int]) -> list[Key]:
        """Close each held socket whose worker (``pids``: index -> pid, running) no longer
        has it open; the keys no index holds any more are dropped. Returns the keys whose
        sockets were all closed."""
        self._sweep = None
        gone: list[Key] = []
        open_sockets = {index: _socket_inodes(pid) for index, pid in pids.items()}
        for key, group in list(self.held.items()):
            for index, sock in enumerate(group):
                inodes = open_sockets.get(index)
                if sock is None or inodes is None:
                    continue  # closed already, or that worker is not running: keep it
                if os.fstat(sock.fileno()).st_ino not in inodes:
                    sock.close()
                    group[index] = None
            if not any(group):
                del self.held[key]
                gone.append(key)
        for key in gone:
            log.info("udp slots: {interface}:{port} released (no worker uses it)",
                     interface=key[0] or "*", port=key[1])
        return gone

    def close(self) -> None:
        """Close every channel and held socket (the workers have stopped)."""
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        for channel in list(self.channels.values()):
            channel.close()
        for group in self.held.values():
            for sock in group:
                if sock is not None:
                    sock.close()
        self.held.clear()


def _socket_inodes(pid: int) -> set[int] | None:
    """The inodes of the sockets process ``pid`` has open (None: it cannot be read)."""
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    inodes = set()
    for name in names:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


# -- the worker's side -----------------------------------------------------------------------
_channel: socket.socket | None = None
_asked = 0


def install(fd: int = SLOTS_FD) -> bool:
    """Use the slot channel on ``fd`` (a worker calls this once); False if there is none."""
    global _channel
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
        sock.detach()
        return False
    sock.settimeout(ANSWER_TIMEOUT)
    _channel = sock
    return True


def uninstall() -> None:
    """Forget the channel (tests)."""
    global _channel
    if _channel is not None:
        _channel.close()
    _channel = None


def held_socket(interface: str, port: int) -> socket.socket | None:
    """The supervisor's socket for ``interface:port`` (the caller adopts and closes it), or
    None: no channel, no answer in time, or the supervisor could not bind it."""
    global _asked
    sock = _channel
    if sock is None:
        return None
    _asked += 1
    try:
        sock.send(json.dumps({"id": _asked, "udp": [interface, port]}).encode())
        while True:  # (an answer to an earlier request that timed out is dropped)
            packet, fds, _, _ = socket.recv_fds(sock, MAX_PACKET, 1)
            received = [socket.socket(fileno=fd) for fd in fds]
            try:
                answer = json.loads(packet) if packet else {"error": "the supervisor is gone"}
            except ValueError:
                answer = {"error": "an unreadable answer"}
            if not isinstance(answer, dict):
                answer = {"error": "an unreadable answer"}
            if not packet or answer.get("id") == _asked:
                break
            for stale in received:
                stale.close()
    except OSError as e:
        log.warn("udp slots: no socket from the supervisor for {interface}:{port} ({e}); "
                 "binding it here", interface=interface or "*", port=port, e=e)
        return None
    if not answer.get("ok") or len(received) != 1 or \
            received[0].type != socket.SOCK_DGRAM:
        for extra in received:
            extra.close()
        log.debug("udp slots: {interface}:{port}: {why}; binding it here",
                  interface=interface or "*", port=port, why=answer.get("error", "no socket"))
        return None
    return received[0]
