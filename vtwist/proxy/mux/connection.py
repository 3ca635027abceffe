"""One Mux.Cool carrier and its sessions as Twisted transports (shared by server and client).

:class:`MuxConnection` owns the carrier transport (the decoded VMess stream): it parses the
frames arriving on it and writes every session's frames whole, in order, into it.
:class:`MuxStream` is one session presented as an ordinary Twisted transport, so the relay,
``twisted.web`` or any protocol runs over it unchanged.

Writing: every session's frames go into one per-carrier buffer, written as one piece at
the end of the reactor turn (or at once past :data:`FLUSH_BYTES`, and before the carrier
closes), so the frames of many short sessions produced in one turn cost one VMess chunk
(one TLS record) and one socket write; frames of one session keep their order, and the
frames of different sessions never interleave inside a frame. A plain End frame does not
make that write on its own: it leaves with the next other frame, or :data:`END_DELAY`
(2 ms) later (nearly half the writes of short sessions were End frames alone). The sessions' protocols hear
``connectionLost`` in that same end-of-turn call.

Flow control, as V2Ray 4.34 (Mux.Cool has no per-session window; mux.md §6):

- *Towards the carrier*: the connection is the one push producer registered on the carrier;
  when the carrier's buffer fills it pauses every session's producer (the targets, or the
  applications), and resumes them all on drain.
- *From the carrier*: a session whose consumer paused it still gets what was already framed,
  but once it holds more than :data:`SESSION_BUFFER` bytes past the pause the whole carrier
  stops reading until that session drains. This is head-of-line blocking, as in 4.34: one
  stalled reader stops the carrier's other sessions, and memory stays bounded.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableDescriptor,
    IHalfCloseableProtocol,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.proxy.mux.frame import (
    _ADDRESSES,
    END,
    KEEP,
    MAX_TCP_DATA,
    MAX_UDP_DATA,
    NET_TCP,
    NEW,
    OPT_DATA,
    OPT_ERROR,
    Frame,
    FrameDecoder,
    MuxError,
    encode_end,
    encode_keep,
    encode_new,
    split_stream,
)
from vtwist.proxy.mux.sessions import SessionTable
from vtwist.transport.internals import raise_write_high_water

log = Logger(namespace="vtwist.mux")

#: Bytes a paused session may still receive before the whole carrier stops reading.
SESSION_BUFFER = 256 * 1024
#: Frames wait in the carrier's write buffer until the end of the reactor turn (so the
#: frames of many sessions leave as one write: one VMess chunk, one TLS record) unless the
#: buffer holds this many bytes; a larger write goes out at once.
FLUSH_BYTES = 16 * 1024
#: An End frame (without the Error bit) with no other frame to go out waits up to this long
#: for one (a short session's End would otherwise cost a VMess chunk, a TLS record and a
#: write on its own, and a read at the peer); the first other frame takes it along.
END_DELAY = 0.002
_KEEP_HEAD = struct.Struct(">HHBBH")
_NEW_HEAD = struct.Struct(">HHBBB")  # a New frame: metaLen, id, New, option, network
_LEN = struct.Struct(">H")
_END_HEAD = struct.Struct(">HHBB")  # an End frame: metaLen 4, id, End, option

#: protocol classes by whether they hear a half-close (``readConnectionLost``): asked once
#: per class, not once per session's End
_HALF_CLOSEABLE: dict[type, bool] = {}


def _half_closeable(protocol: Any) -> bool:
    kind = type(protocol)
    known = _HALF_CLOSEABLE.get(kind)
    if known is None:
        known = _HALF_CLOSEABLE[kind] = bool(IHalfCloseableProtocol.providedBy(protocol))
    return known


def _no_delay(transport: Any) -> None:
    """Nagle off on the TCP socket under ``transport`` (through its wrapping layers): the
    carrier interleaves many sessions' small frames, which must not wait for ACKs (Go, and
    so V2Ray, sets TCP_NODELAY on every TCP connection)."""
    for _ in range(8):
        no_delay = getattr(transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except OSError:  # not a TCP socket after all
                pass
            return
        transport = getattr(transport, "lowerTransport", None) or getattr(
            transport, "transport", None)
        if transport is None:
            return


@implementer(ITransport, IConsumer, IPushProducer, IHalfCloseableDescriptor)
class MuxStream:
    """One Mux.Cool session as a transport. ``protocol`` receives its events
    (``dataReceived``, ``readConnectionLost``, ``connectionLost``, and for UDP sessions
    ``datagramReceived(data, source)`` when it has one)."""

    #: the session's protocol, and the producer feeding its writes
    protocol: Any = None
    producer: Any = None
    #: we sent End / the peer sent End / the session is over
    sentEnd = False
    gotEnd = False
    closed = False
    disconnecting = False
    #: our consumer paused us, and what arrived since
    paused = False
    pendingBytes = 0
    #: client: the New frame has not gone out yet; when it goes out alone at the latest
    pendingNew = False
    newDeadline = 0.0
    #: answer datagrams with their source in the metadata (an Xray peer)
    xudp = False
    sent = 0
    received = 0
    #: counted in the carrier's ``unended`` (no End either way yet, not over)
    counted = False

    def __init__(self, conn: MuxConnection, sid: int, target: Destination) -> None:
        # (the other attributes start as the class's defaults: a session sets few of them)
        self.conn = conn
        self.id = sid
        self.target = target
        self.udp = target.network == "udp"
        self.counted = True
        conn.unended += 1

    def announced(self) -> None:
        """The New frame goes out now."""
        self.pendingNew = False

    # -- ITransport ------------------------------------------------------------------
    def write(self, data: Any) -> None:
        """Frame and send (a UDP session: one datagram per call)."""
        if self.sentEnd or self.closed or not data:
            return
        n = len(data)
        self.sent += n
        conn = self.conn
        if self.udp or n > MAX_TCP_DATA or conn.closed or conn.transport is None:
            conn.sendData(self, data)
            return
        # One TCP frame (the New with the first bytes, or a Keep): ``sendData``, inline.
        if self.pendingNew:
            self.pendingNew = False
            target = self.target
            address = _ADDRESSES.get((target.host, target.port))
            if address is None:
                frame = encode_new(self.id, target, data)
            else:  # (encode_new, inline: a TCP New with data, to an address encoded before)
                frame = b"".join((_NEW_HEAD.pack(5 + len(address), self.id, NEW, OPT_DATA,
                                                 NET_TCP), address, _LEN.pack(n), data))
        else:
            frame = _KEEP_HEAD.pack(4, self.id, KEEP, 1, n) + data
        conn.writeFrame(frame, n)

    def writeTo(self, data: bytes, source: Destination) -> None:
        """One datagram, with its source address when the peer is Xray."""
        if self.sentEnd or self.closed or not data:
            return
        self.sent += len(data)
        self.conn.sendData(self, data, source if self.xudp else None)

    def writeSequence(self, data: Any) -> None:
        """Several pieces (a UDP session: each one a datagram)."""
        if self.udp:
            for piece in data:
                self.write(piece)
        else:
            self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Half-close: End without Error; the other direction keeps flowing."""
        if self.sentEnd or self.closed:
            return
        conn = self.conn
        if self.pendingNew or conn.closed or conn.transport is None:
            conn.sendEnd(self, False, True)
        else:  # a plain End (``sendEnd``, inline)
            conn.active = conn.wrote = True
            conn._out.append(_END_HEAD.pack(4, self.id, END, 0))
            if conn._lazy is None and not conn._urgent:
                conn._lazy = conn.clock.callLater(END_DELAY, conn._lazyDue)
        self.sentEnd = True
        if self.counted:
            self.counted = False
            conn.unended -= 1
        if self.gotEnd:
            self._finish(None)

    def loseConnection(self) -> None:
        """End the session (End after everything already written)."""
        if self.closed:
            return
        if not self.sentEnd:
            self.sentEnd = True
            self.conn.sendEnd(self, False)
        self._finish(None)

    def abortConnection(self) -> None:
        """End the session with the Error bit."""
        if self.closed:
            return
        if not self.sentEnd:
            self.sentEnd = True
            self.conn.sendEnd(self, error=True)
        self._finish(Failure(ConnectionAborted()))

    def getPeer(self) -> Any:
        """The carrier's peer."""
        return self.conn.getPeer()

    def getHost(self) -> Any:
        """The carrier's local address."""
        return self.conn._host or self.conn.getHost()

    # -- IConsumer: who feeds this session's writes -----------------------------------
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Paused with every other session whenever the carrier is full."""
        self.producer = producer
        if self.conn.writePaused and streaming:
            producer.pauseProducing()

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.producer = None

    # -- IPushProducer: our consumer tells us to stop ------------------------------------
    def pauseProducing(self) -> None:
        """The consumer is full: count what still arrives (see the module docstring)."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The consumer drained."""
        self.paused = False
        self.pendingBytes = 0
        if self.conn.blockers:
            self.conn.unblock(self)

    def stopProducing(self) -> None:
        """Stop for good."""
        self.loseConnection()

    # -- events from the carrier ---------------------------------------------------------
    def _data(self, data: bytes, source: Destination | None) -> None:
        protocol = self.protocol
        if protocol is None or self.gotEnd:
            return
        self.received += len(data)
        if self.udp:
            if source is not None:
                self.xudp = True
            receive = getattr(protocol, "datagramReceived", None)
            if receive is not None:
                receive(data, source or self.target)
            else:
                protocol.dataReceived(data)
        else:
            protocol.dataReceived(data)
        if self.paused and not self.closed:
            self.pendingBytes += len(data)
            if self.pendingBytes > SESSION_BUFFER:
                self.conn.block(self)

    def _end(self, error: bool) -> None:
        """The peer sent End."""
        if self.closed or self.gotEnd:
            return
        self.gotEnd = True
        if self.counted:
            self.counted = False
            self.conn.unended -= 1
        if error:
            self.sentEnd = True  # the peer has forgotten the id: nothing more to send
            self._finish(Failure(ConnectionLost("the peer ended the session with an error")))
        elif self.sentEnd:
            self._finish(None)
        else:
            protocol = self.protocol
            half = _HALF_CLOSEABLE.get(type(protocol))  # (_half_closeable, inline)
            if half is None:
                half = _half_closeable(protocol)
            if half:
                protocol.readConnectionLost()
            else:
                self.loseConnection()

    def _finish(self, reason: Failure | None) -> None:
        """Forget the id and tell the protocol (on the next reactor turn, as Twisted)."""
        if self.closed:
            return
        self.closed = True
        self.disconnecting = True
        self.pendingNew = False
        conn = self.conn
        if self.counted:
            self.counted = False
            conn.unended -= 1
        conn.forget(self)
        protocol = self.protocol
        self.producer = None
        if protocol is not None:
            self.protocol = None
            # conn.notifyLost, inline
            conn._lostQueue.append((protocol, reason))
            if conn._turn is None:
                conn._turn = conn.clock.callLater(0, conn._endOfTurn)

    def _lost(self, reason: Failure) -> None:
        """The carrier is gone."""
        self.sentEnd = True
        self._finish(reason)


class _WriteGate:
    """The producer registered on the carrier: pauses and resumes every session's producer."""

    def __init__(self, conn: MuxConnection) -> None:
        self.conn = conn

    def pauseProducing(self) -> None:
        self.conn.writePaused = True
        for stream in self.conn.sessions:
            if stream.producer is not None:
                stream.producer.pauseProducing()

    def resumeProducing(self) -> None:
        self.conn.writePaused = False
        for stream in self.conn.sessions:
            if stream.producer is not None and not self.conn.writePaused:
                stream.producer.resumeProducing()

    def stopProducing(self) -> None:
        self.conn.lost(Failure(ConnectionLost("the carrier stopped")))


class MuxConnection:
    """A carrier: parses frames into sessions, writes sessions' frames whole.

    Subclasses handle New frames (:meth:`frameNew`) and the end of the carrier.
    ``transport`` may be None until :meth:`attach`.
    """

    role = "mux"

    def __init__(self, clock: Any, transport: Any = None) -> None:
        self.clock = clock
        self.sessions: SessionTable[MuxStream] = SessionTable()
        #: live sessions with no End either way yet (what a client's concurrency counts)
        self.unended = 0
        self.decoder = FrameDecoder(self.sessions.udp)
        self.transport: Any = None
        self.writePaused = False
        self.readPaused = False
        self.blockers: set[int] = set()
        self.closed = False
        self.failed: str | None = None
        #: set on traffic, for an ActivityTimer; ``wrote``: set on every frame written
        self.active = False
        self.wrote = False
        #: frames not yet written to the carrier, and their payload bytes
        self._out: list[Any] = []
        self._outBytes = 0
        #: ``_out`` holds a frame other than a plain End (it goes out at the end of the turn)
        self._urgent = False
        #: the call that writes plain End frames left waiting (END_DELAY)
        self._lazy: Any = None
        #: sessions whose protocol hears ``connectionLost`` at the end of this turn
        self._lostQueue: list[tuple[Any, Failure | None]] = []
        #: the call at the end of this reactor turn (flushes ``_out``, tells ``_lostQueue``)
        self._turn: Any = None
        #: carrier writes so far (each one VMess chunk or more)
        self.writes = 0
        self._peer: Any = None
        self._host: Any = None
        if transport is not None:
            self.attach(transport)

    def attach(self, transport: Any) -> None:
        """Start writing to ``transport`` and register as its producer."""
        self.transport = transport
        raise_write_high_water(transport)
        _no_delay(transport)
        transport.registerProducer(_WriteGate(self), True)

    def getPeer(self) -> Any:
        """The carrier's peer (asked of the transport once)."""
        peer = self._peer
        if peer is None and self.transport is not None:
            peer = self._peer = self.transport.getPeer()
        return peer

    def getHost(self) -> Any:
        """The carrier's local address (asked of the transport once: every session's
        ``getHost`` would be a ``getsockname`` call)."""
        host = self._host
        if host is None and self.transport is not None:
            host = self._host = self.transport.getHost()
        return host

    def describe(self) -> str:
        """Who is at the other end, for log lines."""
        peer = self.getPeer()
        host = getattr(peer, "host", None)
        return f"{host}:{getattr(peer, 'port', '')}" if host else "unknown"

    # -- the end of the reactor turn ------------------------------------------------------
    def _endOfTurn(self) -> None:
        """Tell the protocols of the sessions that ended, then write the frames queued."""
        self._turn = None
        if self._lostQueue:
            lost, self._lostQueue = self._lostQueue, []
            for protocol, reason in lost:
                # (Twisted's own shared ``connectionDone`` failure for a clean end)
                protocol.connectionLost(reason if reason is not None else connectionDone)
        if self._urgent:
            self.flush()

    def _lazyDue(self) -> None:
        """Plain End frames waited long enough for company."""
        self._lazy = None
        if self._out:
            self.flush()

    def notifyLost(self, protocol: Any, reason: Failure | None) -> None:
        """``protocol.connectionLost`` at the end of this turn (as Twisted, never inside
        the call that ended the session)."""
        self._lostQueue.append((protocol, reason))
        if self._turn is None:
            self._turn = self.clock.callLater(0, self._endOfTurn)

    # -- writing -------------------------------------------------------------------------
    def write(self, pieces: list[Any], size: int = 0) -> None:
        """Whole frames (``size`` payload bytes) to the carrier: queued until the end of
        the turn, so every session's frames of one turn leave in one write; at once when
        the queue holds :data:`FLUSH_BYTES`."""
        if self.closed or self.transport is None:
            return
        self.active = True
        self.wrote = True
        self._out += pieces
        self._urgent = True
        self._outBytes += size
        if self._outBytes >= FLUSH_BYTES:
            self.flush()
        elif self._turn is None:
            self._turn = self.clock.callLater(0, self._endOfTurn)

    def writeFrame(self, frame: bytes, size: int) -> None:
        """One whole frame (``size`` payload bytes): :meth:`write` without a list."""
        if self.closed or self.transport is None:
            return
        self.active = self.wrote = self._urgent = True
        self._out.append(frame)
        size = self._outBytes = self._outBytes + size
        if size >= FLUSH_BYTES:
            self.flush()
        elif self._turn is None:
            self._turn = self.clock.callLater(0, self._endOfTurn)

    def writeEnd(self, frame: bytes) -> None:
        """A plain End frame: it goes out with the next other frame, or after
        :data:`END_DELAY` (in order with every frame written before and after it)."""
        if self.closed or self.transport is None:
            return
        self.active = True
        self.wrote = True
        self._out.append(frame)
        if self._lazy is None and not self._urgent:
            self._lazy = self.clock.callLater(END_DELAY, self._lazyDue)

    def flush(self) -> None:
        """Write the queued frames to the carrier now (one write)."""
        out = self._out
        if not out:
            return
        self._out = []
        self._outBytes = 0
        self._urgent = False
        if self.closed or self.transport is None:
            return
        self.writes += 1
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def sendData(self, stream: MuxStream, data: Any, address: Destination | None = None) -> None:
        """``data`` as Keep frames (the New frame first, while it is pending)."""
        n = len(data)
        if stream.udp:
            if n > MAX_UDP_DATA:
                log.debug("mux: dropping a {n}-byte datagram (over {limit})", n=n,
                          limit=MAX_UDP_DATA)
                return
            if stream.pendingNew:
                stream.announced()
                self.write([encode_new(stream.id, stream.target, data)], n)
            elif address is None:
                self.write([_KEEP_HEAD.pack(4, stream.id, KEEP, 1, n) + data], n)
            else:
                self.write(encode_keep(stream.id, data, address), n)
            return
        if n > MAX_TCP_DATA:
            if stream.pendingNew:
                stream.pendingNew = False
                view = memoryview(data)
                self.write([encode_new(stream.id, stream.target, view[:MAX_TCP_DATA]),
                            *split_stream(stream.id, view[MAX_TCP_DATA:])], n)
            else:
                self.write(split_stream(stream.id, data), n)
            return
        # One frame: a session's New with its first bytes, or a Keep.
        if self.closed or self.transport is None:
            return
        if stream.pendingNew:
            stream.pendingNew = False
            frame = encode_new(stream.id, stream.target, data)
        else:
            frame = _KEEP_HEAD.pack(4, stream.id, KEEP, 1, n) + data
        self.writeFrame(frame, n)

    def sendEnd(self, stream: MuxStream, error: bool, halfClose: bool = False) -> None:
        """End for ``stream`` (a never-announced session: End with Error alone, as 4.34;
        a half-close announces it first)."""
        if stream.pendingNew:
            stream.announced()
            if halfClose:
                self.write([encode_new(stream.id, stream.target), encode_end(stream.id, error)])
                return
            error = True
        if error:
            self.write([_END_HEAD.pack(4, stream.id, END, OPT_ERROR)])
            return
        # :meth:`writeEnd`, inline
        if self.closed or self.transport is None:
            return
        self.active = self.wrote = True
        self._out.append(_END_HEAD.pack(4, stream.id, END, 0))
        if self._lazy is None and not self._urgent:
            self._lazy = self.clock.callLater(END_DELAY, self._lazyDue)

    def flushNew(self, stream: MuxStream) -> None:
        """Send a pending New without data (the first-payload wait is over)."""
        if stream.pendingNew and not stream.closed:
            stream.announced()
            self.write([encode_new(stream.id, stream.target)])

    # -- reading -------------------------------------------------------------------------
    def dataReceived(self, data: Any) -> None:
        """Carrier bytes: parse and dispatch frames."""
        self.receivedSequence((data,))

    def receivedSequence(self, payloads: Any) -> None:
        """Several pieces of carrier bytes (decoded VMess chunks) at once."""
        if self.closed:
            return
        try:
            frames = self.decoder.feed_compact(payloads)
        except MuxError as e:
            self.fail(str(e))
            return
        self.frames(frames)

    def frames(self, frames: list[Any]) -> None:
        """Dispatch decoded frames to their sessions (:class:`Frame` objects, or the
        tuples :meth:`FrameDecoder.feed_compact` gives for plain frames)."""
        self.active = True
        sessions = self.sessions.live  # (a dict: ``get`` without a Python call)
        # Consecutive Keep frames of one TCP session reach it as one piece (a sender's
        # large write arrives as a run of 8 KiB frames); datagrams stay one per frame.
        run: MuxStream | None = None
        pieces: list[bytes] = []
        for frame in frames:
            if self.closed:
                return
            if type(frame) is tuple:  # a plain Keep / End / KeepAlive
                sid, status, option, data = frame
                if status == KEEP:
                    stream = sessions.get(sid)
                    if stream is None:
                        if data is not None:
                            self.unknownKeep(Frame(sid, status, option, None, data))
                    elif data:
                        if stream is run:
                            pieces.append(data)
                            continue
                        if run is not None:
                            run._data(b"".join(pieces) if len(pieces) > 1 else pieces[0],
                                      None)
                            run = None
                            if self.closed:
                                return
                        if stream.udp:
                            stream._data(data, None)
                        else:
                            run, pieces = stream, [data]
                    continue
                if run is not None:
                    run._data(b"".join(pieces) if len(pieces) > 1 else pieces[0], None)
                    run = None
                    if self.closed:
                        return
                if status == END:
                    stream = sessions.get(sid)
                    if stream is not None:
                        stream._end(bool(option & OPT_ERROR))
                continue  # KeepAlive: nothing (its data is already consumed)
            status = frame.status
            if status == KEEP:
                stream = sessions.get(frame.session_id)
                if stream is None:
                    if frame.data is not None:
                        self.unknownKeep(frame)
                elif frame.data:
                    if stream is run:
                        pieces.append(frame.data)
                        continue
                    if run is not None:
                        run._data(b"".join(pieces) if len(pieces) > 1 else pieces[0], None)
                        run = None
                        if self.closed:
                            return
                    if stream.udp:
                        stream._data(frame.data, frame.target)
                    else:
                        run, pieces = stream, [frame.data]
                continue
            if run is not None:
                run._data(b"".join(pieces) if len(pieces) > 1 else pieces[0], None)
                run = None
                if self.closed:
                    return
            if status == END:
                stream = sessions.get(frame.session_id)
                if stream is not None:
                    stream._end(bool(frame.option & OPT_ERROR))
            elif status == NEW:
                self.frameNew(frame)
            # KeepAlive: nothing (its data is already consumed)
        if run is not None and not self.closed:
            run._data(b"".join(pieces) if len(pieces) > 1 else pieces[0], None)

    def unknownKeep(self, frame: Frame) -> None:
        """Keep + Data for an id we do not know: End, as 4.34 answers (mux.md §3.5)."""
        self.writeEnd(encode_end(frame.session_id))

    def frameNew(self, frame: Frame) -> None:
        """A New frame (the server opens a session; a client ignores it)."""

    # -- flow control ---------------------------------------------------------------------
    def block(self, stream: MuxStream) -> None:
        """``stream`` holds too much: stop reading the carrier until it drains."""
        self.blockers.add(stream.id)
        if not self.readPaused and self.transport is not None and not self.closed:
            self.readPaused = True
            self.transport.pauseProducing()

    def unblock(self, stream: MuxStream) -> None:
        """``stream`` drained (or ended): read again once no session is over its bound."""
        self.blockers.discard(stream.id)
        if self.readPaused and not self.blockers and not self.closed:
            self.readPaused = False
            self.transport.resumeProducing()

    # -- ending ---------------------------------------------------------------------------
    def forget(self, stream: MuxStream) -> None:
        """``stream`` is over."""
        sessions = self.sessions
        sid = stream.id
        if sessions.live.get(sid) is stream:  # SessionTable.remove, inline
            del sessions.live[sid]
            if stream.udp:
                sessions.udp.discard(sid)
        if self.blockers:
            self.unblock(stream)

    def fail(self, reason: str) -> None:
        """Bad input: one log line, every session ends, the carrier is aborted."""
        if self.closed:
            return
        self.failed = reason
        log.info("{role} from {peer}: {why}; closing the mux connection", role=self.role,
                 peer=self.describe(), why=reason)
        self.lost(Failure(ConnectionLost(f"mux connection failed: {reason}")))
        transport = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            (abort or transport.loseConnection)()

    def lost(self, reason: Failure | None = None) -> None:
        """The carrier is gone: every session ends with it."""
        if self.closed:
            return
        self.closed = True
        lazy, self._lazy = self._lazy, None
        if lazy is not None and lazy.active():
            lazy.cancel()
        why = reason if reason is not None and not reason.check(ConnectionDone) \
            else Failure(ConnectionLost("the mux connection closed"))
        for stream in self.sessions:
            stream._lost(why)
        self.blockers.clear()

    def endOfInput(self) -> bool:
        """The carrier's input ended; False (after the log line) if inside a frame."""
        try:
            self.decoder.end()
        except MuxError as e:
            self.fail(str(e))
            return False
        return True
