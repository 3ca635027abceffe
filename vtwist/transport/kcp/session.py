"""The mKCP ARQ session as a sans-IO state machine (V2Ray 4.34 compatible).

Style follows aioquic: feed datagrams with :meth:`Session.receive_datagram`
(or pre-parsed segments with :meth:`Session.receive_segments`), collect output
with :meth:`Session.datagrams_to_send`, and drive time with :meth:`next_timer`
and :meth:`handle_timer`.  ``now`` is always a float in seconds from any
monotonic-ish clock; the session keeps its own millisecond clock relative to
its creation, as V2Ray does.

The session keeps the states, pings, TERMINATE and the timers, and composes
the ARQ parts (each sans-IO, taking integer milliseconds as ``now``):

* :class:`~vtwist.transport.kcp.sender.Sender`: send queue and window, segments
  in flight, loss detection and retransmission, ACKs received;
* :class:`~vtwist.transport.kcp.receiver.Receiver`: receive window, reassembly,
  ACKs to send, window updates;
* :class:`~vtwist.transport.kcp.rtt.RttEstimator` (RTO) and
  :class:`~vtwist.transport.kcp.rtt.CongestionWindow` (owned by the sender).

Differences from V2Ray that keep the wire format identical:

* data written is transmitted on the next :meth:`datagrams_to_send` call, and
  acknowledgements for newly received data are emitted at the same time; the
  ``tti`` tick only drives retransmission, re-acknowledgement and pings;
* first transmissions never go past the peer's advertised window (V2Ray may
  over-send up to 20x); a single probe segment keeps a closed window alive;
* losses are found by transmission order and resent (twice) as ACKs arrive, and
  timeouts wait for an ``rto`` without progress (see :mod:`.sender`); the sender's
  :attr:`~vtwist.transport.kcp.sender.Sender.loss_check_at` is one of the timers;
* an ACK sent as data arrives repeats the previous one's numbers, so one lost ACK
  costs the peer no spurious resend;
* small segments of one session may be packed into one datagram (V2Ray parses
  that); data segments are never empty;
* TERMINATE is sent as soon as a session enters Terminating and then every
  second (V2Ray's ping timer keeps its 5 s period), and readers get a window
  update as soon as they free a quarter of the receive window.
"""

from __future__ import annotations

import enum

from .config import KCPConfig
from .crypt import Authenticator
from .obfs import Header
from .receiver import Receiver
from .rtt import RttEstimator
from .segment import (
    CMD_ACK,
    CMD_DATA,
    CMD_PING,
    CMD_TERMINATE,
    OPTION_CLOSE,
    CmdSegment,
    Segment,
    encode_cmd,
    parse_segments,
)
from .sender import Sender

IDLE_TIMEOUT_MS = 30000
PING_INTERVAL_MS = 5000
CLOSING_PING_INTERVAL_MS = 1000
BUSY_PING_MS = 3000
TERMINATING_MS = 8000
PEER_TERMINATING_MS = 4000
READY_TO_CLOSE_MS = 15000


class State(enum.IntEnum):
    """Session states, numbered as in V2Ray."""

    ACTIVE = 0
    READY_TO_CLOSE = 1
    PEER_CLOSED = 2
    TERMINATING = 3
    PEER_TERMINATING = 4
    TERMINATED = 5


class Packer:
    """Obfuscation header plus envelope; one per socket (listeners share it)."""

    def __init__(self, header: Header, auth: Authenticator) -> None:
        self.header = header
        self.auth = auth
        self.auth_failures = 0

    def pack(self, plain: bytes) -> bytes:
        """Wrap one envelope plaintext into a datagram."""
        return self.header.next() + self.auth.seal(plain)

    def unpack(self, datagram: bytes) -> bytes | None:
        """Envelope plaintext of a datagram, or None (counted) when it fails."""
        size = self.header.size
        if len(datagram) <= size:
            self.auth_failures += 1
            return None
        plain = self.auth.open(datagram[size:] if size else datagram)
        if plain is None:
            self.auth_failures += 1
        return plain


class Session:
    """One mKCP conversation: states, pings and timers around a sender and a receiver."""

    def __init__(
        self,
        conv: int,
        config: KCPConfig,
        packer: Packer,
        now: float,
        *,
        pack_segments: bool = True,
        terminating_ms: int = TERMINATING_MS,
    ) -> None:
        self.conv = conv & 0xFFFF
        self.config = config
        self.packer = packer
        self.pack_segments = pack_segments
        self.terminating_ms = terminating_ms
        self._t0 = now
        self._tti = config.tti
        self._budget = config.plain_budget
        self._send_buffer_segs = config.send_buffer_segs
        self.state = State.ACTIVE
        self._state_since = 0
        self._last_incoming = 0
        self._last_ping = 0
        self.timed_out = False
        #: Round trip and retransmission timeout.
        self.rtt = RttEstimator(config.tti)
        #: Send queue, window, retransmission.
        self.sender = Sender(self.conv, config, self.rtt)
        #: Receive window, reassembly, acknowledgements.
        self.receiver = Receiver(self.conv, config.receive_window)
        # bound once: called per segment in receive_segments
        self._on_data = self.receiver.on_data
        self._on_ack = self.sender.on_ack
        # output and timers
        self._out: list[bytes] = []
        self._need_terminate = False
        self._next_data_tick: int | None = None
        self._next_ping_tick = PING_INTERVAL_MS
        self._ping_interval = PING_INTERVAL_MS
        # statistics
        self.datagrams_rejected = 0

    # ------------------------------------------------------------------ clock
    def _ms(self, now: float) -> int:
        ms = int((now - self._t0) * 1000.0 + 1e-6)
        return ms if ms > 0 else 0

    # ------------------------------------------------------- component views
    @property
    def rto(self) -> int:
        """Retransmission timeout (ms)."""
        return self.rtt.rto

    @property
    def srtt(self) -> int:
        """Smoothed round trip (ms); 0 before the first sample."""
        return self.rtt.srtt

    @property
    def rttvar(self) -> int:
        """Round-trip variation (ms)."""
        return self.rtt.rttvar

    @property
    def snd_nxt(self) -> int:
        """Next sequence number to send."""
        return self.sender.snd_nxt

    @property
    def una(self) -> int:
        """Oldest unacknowledged sequence number."""
        return self.sender.una

    @property
    def rcv_nxt(self) -> int:
        """Next sequence number the application will read."""
        return self.receiver.rcv_nxt

    @property
    def rcv_wnd(self) -> int:
        """Receive window (segments)."""
        return self.receiver.rcv_wnd

    @property
    def segments_sent(self) -> int:
        """DATA segments put on the wire, retransmissions included."""
        return self.sender.segments_sent

    @property
    def retransmissions(self) -> int:
        """DATA segments sent again after a timeout."""
        return self.sender.retransmissions

    @property
    def segments_received(self) -> int:
        """DATA segments accepted into the receive window."""
        return self.receiver.segments_received

    @property
    def dropped_out_of_window(self) -> int:
        """DATA segments dropped because they were outside the receive window."""
        return self.receiver.dropped_out_of_window

    # ----------------------------------------------------------- application
    @property
    def writable(self) -> bool:
        """True while application data is still accepted (state Active)."""
        return self.state == State.ACTIVE and not self.sender.closed

    @property
    def send_queue_segments(self) -> int:
        """Segments written but not yet acknowledged."""
        return len(self.sender.index)

    @property
    def send_queue_low(self) -> bool:
        """True when the send window is at most half full (writers may resume)."""
        return len(self.sender.index) <= self._send_buffer_segs // 2

    @property
    def send_buffer_full(self) -> bool:
        """True when the send window holds more than ``send_buffer_segs``."""
        return len(self.sender.index) > self._send_buffer_segs

    def write(self, data: bytes) -> bool:
        """Queue application bytes; False (data dropped) unless state is Active."""
        if self.state != State.ACTIVE or self.sender.closed:
            return False
        if data:
            self.sender.write(data)
        return True

    def has_data(self) -> bool:
        """True when in-order data waits for :meth:`read`."""
        return self.receiver.has_data()

    def read(self) -> list[bytes]:
        """Pop all in-order data; this advances rcv_nxt and so the window."""
        return self.receiver.read()

    @property
    def read_closed(self) -> bool:
        """True when no more data will ever be delivered to the application."""
        st = self.state
        if st in (State.READY_TO_CLOSE, State.TERMINATING, State.TERMINATED):
            return True
        return st == State.PEER_TERMINATING and not self.receiver.has_data()

    def close(self, now: float) -> bool:
        """Application close; False if the session was already closing."""
        ms = self._ms(now)
        st = self.state
        if st == State.ACTIVE:
            self._set_state(State.READY_TO_CLOSE, ms)
        elif st == State.PEER_CLOSED:
            self._set_state(State.TERMINATING, ms)
        elif st == State.PEER_TERMINATING:
            self._set_state(State.TERMINATED, ms)
        else:
            return False
        return True

    def abort(self, now: float, notify: bool = True) -> None:
        """Forget everything at once; with ``notify`` one TERMINATE is queued for the peer."""
        if self.state == State.TERMINATED:
            return
        ms = self._ms(now)
        self._set_state(State.TERMINATED, ms)
        if notify:
            self._send_cmd(CMD_TERMINATE, ms)

    # ---------------------------------------------------------------- states
    def _set_state(self, state: State, ms: int) -> None:
        self.state = state
        self._state_since = ms
        if state in (State.PEER_CLOSED, State.TERMINATING, State.PEER_TERMINATING,
                     State.TERMINATED):
            self.sender.close()
        if state in (State.TERMINATING, State.PEER_TERMINATING, State.TERMINATED):
            self._ping_interval = CLOSING_PING_INTERVAL_MS
            if self._next_ping_tick > ms + CLOSING_PING_INTERVAL_MS:
                self._next_ping_tick = ms + CLOSING_PING_INTERVAL_MS
        if state == State.TERMINATING:
            self._need_terminate = True
        if state == State.TERMINATED:
            self.receiver.clear()
            self._out.clear()
            self._need_terminate = False

    def _on_close_option(self, ms: int) -> None:
        if self.state == State.ACTIVE:
            self._set_state(State.PEER_CLOSED, ms)
        elif self.state == State.READY_TO_CLOSE:
            self._set_state(State.TERMINATING, ms)

    @property
    def _option(self) -> int:
        return OPTION_CLOSE if self.state == State.READY_TO_CLOSE else 0

    # ----------------------------------------------------------------- input
    def receive_datagram(self, data: bytes, now: float) -> bool:
        """Open, parse and process one datagram; False when it was rejected."""
        plain = self.packer.unpack(data)
        if plain is None:
            self.datagrams_rejected += 1
            return False
        segs = parse_segments(plain)
        if not segs:
            self.datagrams_rejected += 1
            return False
        self.receive_segments(segs, now)
        return True

    def receive_segments(self, segments: list[Segment], now: float) -> None:
        """Process parsed segments; stops at the first one of another conv."""
        if self.state == State.TERMINATED:
            return
        ms = self._ms(now)
        self._last_incoming = ms
        conv = self.conv
        for seg in segments:
            if seg.conv != conv:
                break
            if seg.option & OPTION_CLOSE:
                self._on_close_option(ms)
            cmd = seg.cmd
            if cmd == CMD_DATA:
                self._on_data(seg)  # type: ignore[arg-type]
            elif cmd == CMD_ACK:
                self._on_ack(seg, ms)  # type: ignore[arg-type]
            else:
                self._on_cmd(seg, ms)  # type: ignore[arg-type]

    def _on_cmd(self, seg: CmdSegment, ms: int) -> None:
        if seg.cmd == CMD_TERMINATE:
            st = self.state
            if st in (State.ACTIVE, State.PEER_CLOSED):
                self._set_state(State.PEER_TERMINATING, ms)
            elif st == State.READY_TO_CLOSE:
                self._set_state(State.TERMINATING, ms)
            elif st == State.TERMINATING:
                self._set_state(State.TERMINATED, ms)
        sender = self.sender
        if not sender.closed:
            sender.process_receiving_next(seg.receiving_next)
        self.receiver.clear_acks(seg.sending_next)
        self.rtt.peer_rto(seg.peer_rto, ms)

    # ---------------------------------------------------------------- output
    def _send_cmd(self, cmd: int, ms: int) -> None:
        self._out.append(encode_cmd(self.conv, cmd, self._option, self.sender.una,
                                    self.receiver.rcv_nxt, self.rtt.rto))
        self._last_ping = ms

    def _flush(self, ms: int, tick: bool) -> None:
        """Acks, then data (and a PING when only it can carry a new una)."""
        option = OPTION_CLOSE if self.state == State.READY_TO_CLOSE else 0
        out = self._out
        self.receiver.flush(out, ms, tick, option, self.rtt.rto)
        if self.sender.flush(out, ms, tick, option):
            self._send_cmd(CMD_PING, ms)

    def _tick_flush(self, ms: int) -> None:
        st = self.state
        if st == State.TERMINATED:
            return
        if st == State.ACTIVE and ms - self._last_incoming >= IDLE_TIMEOUT_MS:
            self.timed_out = True
            self._set_state(State.READY_TO_CLOSE, ms)
        elif st == State.PEER_CLOSED and ms - self._last_incoming >= IDLE_TIMEOUT_MS:
            # not in V2Ray: a PeerClosed session whose peer vanished would live forever
            self.timed_out = True
            self._set_state(State.TERMINATING, ms)
        st = self.state
        if st == State.READY_TO_CLOSE:
            if not self.sender.index:
                self._set_state(State.TERMINATING, ms)
            elif ms - self._state_since > READY_TO_CLOSE_MS:
                self.timed_out = True
                self._set_state(State.TERMINATING, ms)
        elif st == State.PEER_TERMINATING and ms - self._state_since > PEER_TERMINATING_MS:
            self._set_state(State.TERMINATING, ms)
        if self.state == State.TERMINATING:
            self._need_terminate = False
            self._send_cmd(CMD_TERMINATE, ms)
            if ms - self._state_since > self.terminating_ms:
                self._set_state(State.TERMINATED, ms)
            return
        self._flush(ms, True)
        if ms - self._last_ping >= BUSY_PING_MS:
            self._send_cmd(CMD_PING, ms)

    def _eager_flush(self, ms: int) -> None:
        st = self.state
        if st == State.TERMINATED:
            return
        if st == State.READY_TO_CLOSE and not self.sender.index:
            self._set_state(State.TERMINATING, ms)
        if self.state == State.TERMINATING:
            if self._need_terminate:
                self._need_terminate = False
                self._send_cmd(CMD_TERMINATE, ms)
            return
        self._flush(ms, False)

    def _has_data_work(self) -> bool:
        if self.state in (State.TERMINATING, State.TERMINATED):
            return False
        return bool(self.sender.window) or bool(self.receiver.acks)

    def _update_data_timer(self, ms: int) -> None:
        if self._has_data_work():
            if self._next_data_tick is None:
                self._next_data_tick = ms + self._tti
        else:
            self._next_data_tick = None

    # ---------------------------------------------------------------- timers
    def next_timer(self) -> float | None:
        """Absolute time (same clock as ``now``) of the next :meth:`handle_timer`."""
        if self.state == State.TERMINATED:
            return None
        t = self._next_ping_tick
        if self._next_data_tick is not None and self._next_data_tick < t:
            t = self._next_data_tick
        check = self.sender.loss_check_at  # None once the sender is closed
        if check is not None and check < t:
            t = check  # the flush that follows resends what has waited long enough
        return self._t0 + t / 1000.0

    def handle_timer(self, now: float) -> None:
        """Run the periodic work that is due at ``now``."""
        if self.state == State.TERMINATED:
            return
        ms = self._ms(now)
        fire = False
        if ms >= self._next_ping_tick:
            fire = True
            while self._next_ping_tick <= ms:
                self._next_ping_tick += self._ping_interval
        if self._next_data_tick is not None and ms >= self._next_data_tick:
            fire = True
            self._next_data_tick = ms + self._tti
        if fire:
            self._tick_flush(ms)
        self._update_data_timer(ms)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything that should go on the wire now, packed into datagrams."""
        ms = self._ms(now)
        self._eager_flush(ms)
        self._update_data_timer(ms)
        out = self._out
        if not out:
            return []
        self._out = []
        pack = self.packer.pack
        if not self.pack_segments:
            return [pack(s) for s in out]
        budget = self._budget
        datagrams = []
        cur: list[bytes] = []
        size = 0
        for s in out:
            if cur and size + len(s) > budget:
                datagrams.append(pack(b"".join(cur)))
                cur = []
                size = 0
            cur.append(s)
            size += len(s)
        if cur:
            datagrams.append(pack(b"".join(cur)))
        return datagrams
