"""The mKCP ARQ session as a sans-IO state machine (V2Ray 4.34 compatible).

Style follows aioquic: feed datagrams with :meth:`Session.receive_datagram`
(or pre-parsed segments with :meth:`Session.receive_segments`), collect output
with :meth:`Session.datagrams_to_send`, and drive time with :meth:`next_timer`
and :meth:`handle_timer`.  ``now`` is always a float in seconds from any
monotonic-ish clock; the session keeps its own millisecond clock relative to
its creation, as V2Ray does.

Differences from V2Ray that keep the wire format identical:

* data written is transmitted on the next :meth:`datagrams_to_send` call, and
  acknowledgements for newly received data are emitted at the same time; the
  ``tti`` tick only drives retransmission, re-acknowledgement and pings;
* first transmissions never go past the peer's advertised window (V2Ray may
  over-send up to 20x); a single probe segment keeps a closed window alive;
* small segments of one session may be packed into one datagram (V2Ray parses
  that); data segments are never empty;
* TERMINATE is sent as soon as a session enters Terminating and then every
  second (V2Ray's ping timer keeps its 5 s period), and readers get a window
  update as soon as they free a quarter of the receive window.
"""

from __future__ import annotations

import enum
from collections import deque
from heapq import heappop, heappush

from .config import KCPConfig
from .crypt import Authenticator
from .obfs import Header
from .segment import (
    ACK_MAX_NUMBERS,
    CMD_ACK,
    CMD_DATA,
    CMD_PING,
    CMD_TERMINATE,
    OPTION_CLOSE,
    AckSegment,
    CmdSegment,
    DataSegment,
    Segment,
    encode_ack,
    encode_cmd,
    encode_data,
    parse_segments,
)

MASK = 0xFFFFFFFF
HALF = 0x7FFFFFFF

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


def _wrap_ge(a: int, b: int) -> bool:
    return ((a - b) & MASK) < HALF


class _Seg:
    __slots__ = ("number", "payload", "timeout", "transmit", "acked")

    def __init__(self, number: int, payload: bytes) -> None:
        self.number = number
        self.payload = payload
        self.timeout = 0
        self.transmit = 0
        self.acked = False


class Session:
    """One mKCP conversation."""

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
        self._mss = config.mss
        self._budget = config.plain_budget
        self._send_buffer_segs = config.send_buffer_segs
        self.state = State.ACTIVE
        self._state_since = 0
        self._last_incoming = 0
        self._last_ping = 0
        self.timed_out = False
        # round trip
        self.rto = 100
        self.srtt = 0
        self.rttvar = 0
        self._min_rtt = config.tti
        self._rto_updated = 0
        # sender
        self.snd_nxt = 0
        self.una = 0
        self._window: deque[_Seg] = deque()
        self._index: dict[int, _Seg] = {}
        self._unsent: deque[_Seg] = deque()
        self._remote_wnd_end = 32
        self._sending_in_flight = config.sending_in_flight
        self._control_window = config.sending_in_flight
        self._in_flight_total = 0
        self._una_changed = False
        self._write_closed = False
        # receiver
        self.rcv_nxt = 0
        self.rcv_wnd = config.receiving_window
        self._rcv_buf: dict[int, bytes] = {}
        self._acks: dict[int, list[int]] = {}
        self._ack_heap: list[int] = []
        self._ack_new: list[int] = []
        self._ack_dirty = False
        self._ack_cleared = False
        self._advertised_end = self.rcv_wnd
        # output and timers
        self._out: list[bytes] = []
        self._need_terminate = False
        self._next_data_tick: int | None = None
        self._next_ping_tick = PING_INTERVAL_MS
        self._ping_interval = PING_INTERVAL_MS
        # statistics
        self.segments_sent = 0
        self.retransmissions = 0
        self.segments_received = 0
        self.dropped_out_of_window = 0
        self.datagrams_rejected = 0

    # ------------------------------------------------------------------ clock
    def _ms(self, now: float) -> int:
        ms = int((now - self._t0) * 1000.0 + 1e-6)
        return ms if ms > 0 else 0

    # ----------------------------------------------------------- application
    @property
    def writable(self) -> bool:
        """True while application data is still accepted (state Active)."""
        return self.state == State.ACTIVE and not self._write_closed

    @property
    def send_queue_segments(self) -> int:
        """Segments written but not yet acknowledged."""
        return len(self._index)

    @property
    def send_queue_low(self) -> bool:
        """True when the send window is at most half full (writers may resume)."""
        return len(self._index) <= self._send_buffer_segs // 2

    @property
    def send_buffer_full(self) -> bool:
        """True when the send window holds more than ``send_buffer_segs``."""
        return len(self._index) > self._send_buffer_segs

    def write(self, data: bytes) -> bool:
        """Queue application bytes; False (data dropped) unless state is Active."""
        if not self.writable:
            return False
        if not data:
            return True
        mss = self._mss
        mv = memoryview(data)
        off = 0
        total = len(data)
        if self._unsent:
            tail = self._unsent[-1]
            room = mss - len(tail.payload)
            if room > 0 and tail.transmit == 0 and not tail.acked:
                take = min(room, total)
                tail.payload += bytes(mv[:take])
                off = take
        while off < total:
            seg = _Seg(self.snd_nxt, bytes(mv[off : off + mss]))
            off += mss
            self._window.append(seg)
            self._index[seg.number] = seg
            self._unsent.append(seg)
            self.snd_nxt = (self.snd_nxt + 1) & MASK
        return True

    def has_data(self) -> bool:
        """True when in-order data waits for :meth:`read`."""
        return self.rcv_nxt in self._rcv_buf

    def read(self) -> list[bytes]:
        """Pop all in-order data; this advances rcv_nxt and so the window."""
        buf = self._rcv_buf
        out = []
        nxt = self.rcv_nxt
        while True:
            p = buf.pop(nxt, None)
            if p is None:
                break
            out.append(p)
            nxt = (nxt + 1) & MASK
        if out:
            self.rcv_nxt = nxt
            gain = (nxt + self.rcv_wnd - self._advertised_end) & MASK
            if gain < HALF and gain >= max(1, self.rcv_wnd // 4):
                self._ack_dirty = True
        return out

    @property
    def read_closed(self) -> bool:
        """True when no more data will ever be delivered to the application."""
        st = self.state
        if st in (State.READY_TO_CLOSE, State.TERMINATING, State.TERMINATED):
            return True
        return st == State.PEER_TERMINATING and not self.has_data()

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
            self._close_write()
        if state in (State.TERMINATING, State.PEER_TERMINATING, State.TERMINATED):
            self._ping_interval = CLOSING_PING_INTERVAL_MS
            if self._next_ping_tick > ms + CLOSING_PING_INTERVAL_MS:
                self._next_ping_tick = ms + CLOSING_PING_INTERVAL_MS
        if state == State.TERMINATING:
            self._need_terminate = True
        if state == State.TERMINATED:
            self._rcv_buf.clear()
            self._acks.clear()
            self._ack_heap.clear()
            self._ack_new.clear()
            self._out.clear()
            self._need_terminate = False

    def _close_write(self) -> None:
        self._write_closed = True
        self._window.clear()
        self._index.clear()
        self._unsent.clear()

    def _handle_option(self, option: int, ms: int) -> None:
        if option & OPTION_CLOSE:
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
            self._handle_option(seg.option, ms)
            cmd = seg.cmd
            if cmd == CMD_DATA:
                self._on_data(seg)  # type: ignore[arg-type]
            elif cmd == CMD_ACK:
                self._on_ack(seg, ms)  # type: ignore[arg-type]
            else:
                self._on_cmd(seg, ms)  # type: ignore[arg-type]

    def _on_data(self, seg: DataSegment) -> None:
        n = seg.number
        if ((n - self.rcv_nxt) & MASK) >= self.rcv_wnd:
            self.dropped_out_of_window += 1
            return
        self.segments_received += 1
        self._clear_acks(seg.sending_next)
        e = self._acks.get(n)
        if e is None:
            self._acks[n] = [seg.timestamp, 0]
            heappush(self._ack_heap, n)
            self._ack_new.append(n)
        else:
            e[0] = seg.timestamp
            if e[1] != 0:
                e[1] = 0
                self._ack_new.append(n)
        self._ack_dirty = True
        if n not in self._rcv_buf:
            self._rcv_buf[n] = seg.payload

    def _clear_acks(self, sending_next: int) -> None:
        heap = self._ack_heap
        if not heap or heap[0] >= sending_next:
            return
        acks = self._acks
        removed = False
        while heap and heap[0] < sending_next:
            if acks.pop(heappop(heap), None) is not None:
                removed = True
        if removed:
            # V2Ray then sends an (often empty) ACK on its next tick; vtwist does the same
            # on ticks but not eagerly, which would answer every una PING with an ACK.
            self._ack_cleared = True

    def _process_receiving_next(self, receiving_next: int) -> None:
        win = self._window
        index = self._index
        changed = False
        while win and not _wrap_ge(win[0].number, receiving_next):
            seg = win.popleft()
            if not seg.acked:
                seg.acked = True
                del index[seg.number]
            changed = True
        if changed:
            self._recompute_una()

    def _recompute_una(self) -> None:
        win = self._window
        while win and win[0].acked:
            win.popleft()
        una = win[0].number if win else self.snd_nxt
        if una != self.una:
            self.una = una
            self._una_changed = True

    def _on_ack(self, seg: AckSegment, ms: int) -> None:
        if self._write_closed:
            return
        if self._remote_wnd_end < seg.receiving_window:
            self._remote_wnd_end = seg.receiving_window
        self._process_receiving_next(seg.receiving_next)
        numbers = seg.numbers
        if not numbers:
            return
        index = self._index
        maxack = 0
        maxack_removed = False
        removed_any = False
        for n in numbers:
            s = index.pop(n, None)
            if s is not None:
                s.acked = True
                removed_any = True
                if self._in_flight_total > 0:
                    self._in_flight_total -= 1
            if n > maxack:
                maxack = n
                maxack_removed = s is not None
        if removed_any:
            self._recompute_una()
        if maxack_removed:
            dec = self.rto // 3
            for s in self._window:
                if _wrap_ge(s.number, maxack):
                    break
                if not s.acked and s.transmit > 0 and s.timeout > dec:
                    s.timeout -= dec
            rtt = (ms - seg.timestamp) & MASK
            if rtt < 10000:
                self._rtt_update(rtt, ms)

    def _on_cmd(self, seg: CmdSegment, ms: int) -> None:
        if seg.cmd == CMD_TERMINATE:
            st = self.state
            if st in (State.ACTIVE, State.PEER_CLOSED):
                self._set_state(State.PEER_TERMINATING, ms)
            elif st == State.READY_TO_CLOSE:
                self._set_state(State.TERMINATING, ms)
            elif st == State.TERMINATING:
                self._set_state(State.TERMINATED, ms)
        if not self._write_closed:
            self._process_receiving_next(seg.receiving_next)
        self._clear_acks(seg.sending_next)
        if ms - self._rto_updated >= 3000:
            self.rto = max(seg.peer_rto, self._min_rtt)
            self._rto_updated = ms

    # ------------------------------------------------------------------- rtt
    def _rtt_update(self, rtt: int, ms: int) -> None:
        if rtt > HALF:
            return
        if self.srtt == 0:
            self.srtt = rtt
            self.rttvar = rtt // 2
        else:
            delta = abs(rtt - self.srtt)
            self.rttvar = (3 * self.rttvar + delta) // 4
            self.srtt = (7 * self.srtt + rtt) // 8
            if self.srtt < self._min_rtt:
                self.srtt = self._min_rtt
        if self._min_rtt < 4 * self.rttvar:
            x = self.srtt + 4 * self.rttvar
        else:
            x = self.srtt + self.rttvar
        if x > 10000:
            x = 10000
        # never 0 (a 0 ms first sample on loopback would make every tick resend)
        self.rto = max(1, x * 5 // 4)
        self._rto_updated = ms

    # ---------------------------------------------------------------- output
    def _send_cmd(self, cmd: int, ms: int) -> None:
        self._out.append(encode_cmd(self.conv, cmd, self._option, self.una, self.rcv_nxt, self.rto))
        self._last_ping = ms

    def _emit_ack(self, numbers: list[int], ts: int) -> None:
        end = (self.rcv_nxt + self.rcv_wnd) & MASK
        self._out.append(
            encode_ack(self.conv, self._option, end, self.rcv_nxt, ts, numbers)
        )
        self._advertised_end = end

    def _flush_acks(self, ms: int, full: bool) -> None:
        acks = self._acks
        dirty = self._ack_dirty or (full and self._ack_cleared)
        if not acks and not dirty:
            return
        interval = max(self.rto // 2, 20)
        due: list[int] = []
        later: list[int] = []
        ts = 0
        if full:
            candidates = acks.items()
        else:
            candidates = [(n, acks[n]) for n in self._ack_new if n in acks]
        for n, e in candidates:
            if e[1] > ms:
                if full and len(later) < ACK_MAX_NUMBERS:
                    later.append(n)
                continue
            due.append(n)
            if ((e[0] - ts) & MASK) < HALF:
                ts = e[0]
            e[1] = ms + interval
            if len(due) == ACK_MAX_NUMBERS:
                self._emit_ack(due, ts)
                due = []
                ts = 0
                dirty = False
        self._ack_new.clear()
        if dirty or due:
            for n in later:
                if len(due) >= ACK_MAX_NUMBERS:
                    break
                due.append(n)
            self._emit_ack(due, ts)
        elif not full:
            return
        self._ack_dirty = False
        self._ack_cleared = False

    def _transmit(self, seg: _Seg, ms: int) -> None:
        seg.timeout = ms + self.rto
        seg.transmit += 1
        self.segments_sent += 1
        self._out.append(
            encode_data(self.conv, self._option, ms, seg.number, self.una, seg.payload)
        )

    def _flush_data(self, ms: int, tick: bool) -> None:
        if not self._window:
            if self._una_changed:
                self._una_changed = False
                self._send_cmd(CMD_PING, ms)
            return
        sent_any = False
        if tick:
            avail = (self._remote_wnd_end - self.una) & MASK
            if avail > HALF:
                avail = 0
            cwnd = min(self._sending_in_flight, avail)
            if self.config.congestion and cwnd > self._control_window:
                cwnd = self._control_window
            cwnd *= 20
            sent = lost = 0
            for seg in self._window:
                if seg.acked or seg.transmit == 0 or ms < seg.timeout:
                    continue
                lost += 1
                self.retransmissions += 1
                self._transmit(seg, ms)
                sent += 1
                if sent >= cwnd:
                    break
            if sent:
                sent_any = True
                if self.config.congestion and self._in_flight_total:
                    self._on_loss(lost * 100 // self._in_flight_total)
        # first transmissions, bounded by the peer's window
        limit = self._remote_wnd_end
        if self.config.congestion:
            cap = (self.una + self._control_window) & MASK
            if _wrap_ge(limit, cap):
                limit = cap
        unsent = self._unsent
        while unsent:
            seg = unsent[0]
            if seg.acked:
                unsent.popleft()
                continue
            if not _wrap_ge(seg.number, limit) or (tick and seg.number == self.una):
                unsent.popleft()
                self._in_flight_total += 1
                self._transmit(seg, ms)
                sent_any = True
                continue
            break
        if self._una_changed:
            if sent_any:
                self._una_changed = False  # the DATA segments carried it
            elif tick or not self._window:
                # tell the peer our una so it stops re-acknowledging
                self._una_changed = False
                self._send_cmd(CMD_PING, ms)

    def _on_loss(self, rate: int) -> None:
        if self.rto == 0:
            return
        if rate >= 15:
            self._control_window = self._control_window * 3 // 4
        elif rate <= 5:
            self._control_window += self._control_window // 4
        self._control_window = max(16, min(self._control_window, 2 * self._sending_in_flight))

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
            if not self._index:
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
        self._flush_acks(ms, True)
        self._flush_data(ms, True)
        if ms - self._last_ping >= BUSY_PING_MS:
            self._send_cmd(CMD_PING, ms)

    def _eager_flush(self, ms: int) -> None:
        st = self.state
        if st == State.TERMINATED:
            return
        if st == State.READY_TO_CLOSE and not self._index:
            self._set_state(State.TERMINATING, ms)
        if self.state == State.TERMINATING:
            if self._need_terminate:
                self._need_terminate = False
                self._send_cmd(CMD_TERMINATE, ms)
            return
        self._flush_acks(ms, False)
        self._flush_data(ms, False)

    def _has_data_work(self) -> bool:
        if self.state in (State.TERMINATING, State.TERMINATED):
            return False
        return bool(self._window) or bool(self._acks)

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
