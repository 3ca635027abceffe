"""One QUIC connection driven by Twisted: aioquic's sans-IO ``QuicConnection`` fed with
datagrams and timer calls, its events turned into :class:`~.stream.QuicStreamTransport`\\ s.

:class:`FlowQuicConnection` keeps each stream's receive window at "bytes the application
consumed + ``window``" instead of aioquic's doubling, so a stalled reader stops its sender
after at most ``window`` bytes (aioquic hands data over as events; this is where the
application's consumption is accounted for). It also keeps aioquic's pacer from degrading
to one datagram per wake-up at high rates (:class:`BurstPacer`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aioquic.quic import events
from aioquic.quic.connection import QuicConnection
from aioquic.quic.recovery import QuicPacketPacer
from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.transport.quic.packet import PacketCodec
from vtwist.transport.quic.stream import QuicStreamTransport

log = Logger()

#: QUIC application error code for a reset stream or a closed connection (0: none).
NO_ERROR = 0
#: aioquic's timer asked for less than this far ahead fires on the next reactor turn
#: instead. The reactor's epoll sleeps in whole milliseconds (a 20 us wait is 1 ms), and
#: aioquic's pacer lets at most 16 datagrams go per wake-up: above 16 per ms (gaps under
#: 62.5 us, ~22 MB/s) sleeping through each gap would cap the rate there. Longer gaps are
#: slept: the pacer's bucket then covers the whole millisecond.
SHORT_WAIT = 0.0001


class BurstPacer(QuicPacketPacer):
    """aioquic's pacer with its bucket never smaller than the burst it allows at lower rates.

    aioquic (1.7) floors the time per packet at 1 us but not the bucket: once the pacing
    rate (congestion window / smoothed RTT, the RTT floored at 1 ms) passes one full
    datagram per microsecond (~1.45 GB/s: a congestion window over ~1.45 MB, which a long
    loss-free transfer on a LAN or loopback reaches), the bucket holds less than one
    packet and the pacer lets one datagram out per wake-up: each one a pump, an ``epoll``
    turn and a ``sendto`` of its own. Measured on loopback (VMess over QUIC, 64 MB down):
    a 66 MB window, 0.4 us bucket against 1 us per packet, one datagram per pump and 32
    MB/s; the other direction of the same connection (1.2 MB window, 20 us bucket) sent
    bursts of 16 at 60 MB/s.
    """

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        super().update_rate(congestion_window, smoothed_rtt)
        packet_time = self.packet_time
        if packet_time is not None:
            burst = min(congestion_window // 4, 16 * self._max_datagram_size)
            packets = max(2, burst // self._max_datagram_size)
            if self.bucket_max < packets * packet_time:
                self.bucket_max = packets * packet_time


class FlowQuicConnection(QuicConnection):
    """aioquic's connection whose stream receive windows follow what the application read
    (and whose pacer is a :class:`BurstPacer`)."""

    def __init__(self, *, window: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        pacer = getattr(getattr(self, "_loss", None), "_pacer", None)
        if type(pacer) is QuicPacketPacer:  # (aioquic's private layout: left alone if it moves)
            pacer.__class__ = BurstPacer
        self.window = window
        #: Bytes of each stream the application has been given.
        self.consumed: dict[int, int] = {}

    def _write_stream_limits(self, builder: Any, space: Any, stream: Any) -> None:
        if not stream.max_stream_data_local:
            return
        target = self.consumed.get(stream.stream_id, 0) + self.window
        if target - stream.max_stream_data_local >= self.window // 4:
            stream.max_stream_data_local = target
        elif stream.max_stream_data_local_sent == stream.max_stream_data_local:
            return  # nothing to announce (called for every packet built)
        # Hide the highest offset so that aioquic does not double the window by itself.
        receiver = stream.receiver
        highest, receiver.highest_offset = receiver.highest_offset, 0
        try:
            super()._write_stream_limits(builder, space, stream)
        finally:
            receiver.highest_offset = highest

    def send_backlog(self, stream_id: int) -> int:
        """Bytes written to a stream and not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        return len(stream.sender._buffer) if stream is not None else 0

    def has_stream(self, stream_id: int) -> bool:
        """Whether aioquic still keeps the stream's state."""
        return stream_id in self._streams


class QuicSession:
    """A QUIC connection over one UDP socket (a client's own, or a listener's shared one).

    ``send(data, addr)`` writes a datagram; ``on_stream(session, stream_id)`` (server) gives
    the protocol for a stream the peer opened, or None to refuse it; ``on_closed(session)``
    runs once when the connection is gone; ``on_cid(session, cid, issued)`` (server) hears of
    each connection ID it issues or retires.
    """

    def __init__(self, reactor: Any, quic: FlowQuicConnection, codec: PacketCodec,
                 send: Callable[[bytes, Any], None], peer: Any, host: Any,
                 on_stream: Callable[[QuicSession, int], Any] | None = None,
                 on_closed: Callable[[QuicSession], None] | None = None,
                 on_cid: Callable[[QuicSession, bytes, bool], None] | None = None) -> None:
        self.reactor = reactor
        self.quic = quic
        self.codec = codec
        self.send = send
        self.peer = peer
        self.host = host
        self.on_stream = on_stream
        self.on_closed = on_closed
        self.on_cid = on_cid
        self.streams: dict[int, QuicStreamTransport] = {}
        self.handshake: defer.Deferred = defer.Deferred()
        self.closed = False
        self.terminated_reason: str = ""
        self._timer: Any = None
        self._pump_call: Any = None
        self._pumping = False
        self._again = False

    # -- input ------------------------------------------------------------------------
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """A datagram from the peer (still obfuscated)."""
        if self.closed:
            return
        codec = self.codec
        if not codec.identity:
            data = codec.open(data)
            if data is None:
                return
        self.quic.receive_datagram(data, addr, now=self.reactor.seconds())
        if self._pump_call is None:
            self.schedule()

    def _onTimer(self) -> None:
        self._timer = None
        if self.closed:
            return
        self.quic.handle_timer(now=self.reactor.seconds())
        self.pump()

    # -- output -----------------------------------------------------------------------
    def schedule(self) -> None:
        """Pump soon (writes and datagrams of one reactor turn go out together)."""
        if self._pump_call is None and not self.closed:
            self._pump_call = self.reactor.callLater(0, self.pump)

    def pump(self) -> None:
        """Hand aioquic's events to the streams, send its datagrams, set its timer."""
        if self._pump_call is not None:
            if self._pump_call.active():
                self._pump_call.cancel()
            self._pump_call = None
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again and not self.closed:
                self._again = False
                self._events()
                if self.closed:
                    break
                datagrams = self.quic.datagrams_to_send(now=self.reactor.seconds())
                if datagrams:
                    self._sendAll(datagrams)
                for stream in list(self.streams.values()):
                    stream.sent()
            self._setTimer()
        finally:
            self._pumping = False

    def _sendAll(self, datagrams: list[tuple[bytes, Any]]) -> None:
        send, seal = self.send, self.codec.seal
        many = getattr(send, "many", None)  # a DatagramWriter: the burst in few calls
        if many is not None:
            if not self.codec.identity:
                datagrams = [(seal(data), addr) for data, addr in datagrams]
            dropped = many(datagrams)
            if dropped:
                log.debug("QUIC: {n} datagrams not sent", n=dropped)
            return
        for data, addr in datagrams:
            try:
                send(seal(data), addr)
            except OSError as e:  # unreachable, too big, buffer full: QUIC resends
                log.debug("QUIC: cannot send to {addr}: {e}", addr=addr, e=e)

    def _setTimer(self) -> None:
        if self.closed:
            return
        at = self.quic.get_timer()
        if at is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None
            return
        delay = at - self.reactor.seconds()
        if delay < SHORT_WAIT:
            delay = 0.0  # the next reactor turn, after its I/O (see SHORT_WAIT)
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self.reactor.callLater(delay, self._onTimer)

    def _events(self) -> None:
        """Act on aioquic's events. A stream's data events of one pump are joined and
        handed over as one piece (one protocol call per turn, not one per packet); any
        other event first delivers what was gathered, so the order is kept."""
        gathered: dict[int, tuple[list[bytes], list[bool]]] = {}
        next_event = self.quic.next_event
        while True:
            event = next_event()
            if type(event) is events.StreamDataReceived:
                entry = gathered.get(event.stream_id)
                if entry is None:
                    gathered[event.stream_id] = ([event.data], [event.end_stream])
                else:
                    entry[0].append(event.data)
                    if event.end_stream:
                        entry[1][0] = True
                continue
            if gathered:
                self._received(gathered)
                gathered = {}
                if self.closed:
                    return
            if event is None:
                return
            if isinstance(event, events.StreamDataReceived):  # a subclass, one at a time
                self._received({event.stream_id: ([event.data], [event.end_stream])})
            elif isinstance(event, events.StreamReset):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.peerReset()
            elif isinstance(event, events.StopSendingReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.peerStopped()
            elif isinstance(event, (events.ConnectionIdIssued, events.ConnectionIdRetired)):
                if self.on_cid is not None:
                    self.on_cid(self, event.connection_id,
                                isinstance(event, events.ConnectionIdIssued))
            elif isinstance(event, events.HandshakeCompleted):
                if not self.handshake.called:
                    self.handshake.callback(self)
            elif isinstance(event, events.ConnectionTerminated):
                reason = event.reason_phrase or f"error code {event.error_code}"
                self._terminated(reason)
                return

    def _received(self, gathered: dict[int, tuple[list[bytes], list[bool]]]) -> None:
        for stream_id, (chunks, end) in gathered.items():
            stream = self.streams.get(stream_id)
            if stream is None:
                stream = self._accept(stream_id)
                if stream is None:
                    continue
            stream.received(chunks[0] if len(chunks) == 1 else b"".join(chunks), end[0])

    def _accept(self, stream_id: int) -> QuicStreamTransport | None:
        if self.on_stream is None or self.quic.configuration.is_client:  # clients accept none
            self._refuse(stream_id)
            return None
        proto = self.on_stream(self, stream_id)
        if proto is None:
            self._refuse(stream_id)
            return None
        stream = QuicStreamTransport(self, stream_id)
        self.streams[stream_id] = stream
        stream.start(proto)
        return stream

    def _refuse(self, stream_id: int) -> None:
        try:
            self.quic.stop_stream(stream_id, NO_ERROR)
            self.quic.reset_stream(stream_id, NO_ERROR)
        except Exception:  # noqa: BLE001 - a stream aioquic already forgot
            pass

    # -- streams ------------------------------------------------------------------------
    def openStream(self, proto: Any) -> QuicStreamTransport:
        """A new bidirectional stream carrying ``proto`` (its connectionMade runs now)."""
        stream_id = self.quic.get_next_available_stream_id()
        # aioquic counts a stream as taken once it has one (empty) write.
        self.quic.send_stream_data(stream_id, b"")
        stream = QuicStreamTransport(self, stream_id)
        self.streams[stream_id] = stream
        stream.start(proto)
        return stream

    def forget(self, stream_id: int) -> None:
        """A stream is done with; its flow-control bookkeeping goes."""
        self.streams.pop(stream_id, None)
        self.quic.consumed.pop(stream_id, None)

    @property
    def openStreams(self) -> int:
        """Streams still in use."""
        return len(self.streams)

    # -- closing ------------------------------------------------------------------------
    def close(self, reason: str = "") -> None:
        """Close the connection (CONNECTION_CLOSE to the peer, then drain)."""
        if self.closed:
            return
        self.quic.close(error_code=NO_ERROR, reason_phrase=reason)
        self.pump()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (no more datagrams are sent)."""
        self._terminated(reason)

    def _terminated(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.terminated_reason = reason
        for call in (self._timer, self._pump_call):
            if call is not None and call.active():
                call.cancel()
        self._timer = self._pump_call = None
        if not self.handshake.called:
            self.handshake.errback(Failure(error.ConnectError(string=f"QUIC: {reason}")))
        lost = Failure(error.ConnectionLost(f"QUIC connection closed: {reason}"))
        for stream in list(self.streams.values()):
            stream.lost(lost)
        self.streams.clear()
        if self.on_closed is not None:
            self.on_closed(self)
