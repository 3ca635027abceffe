"""The sending half of an mKCP session (sans-IO, V2Ray 4.34 compatible).

:class:`Sender` cuts application bytes into numbered segments, keeps them until they are
acknowledged, transmits them within the peer's window, retransmits them on timeout and
pulls their deadlines in when a later segment is acknowledged (fast resend).  It encodes
DATA segments into the list its owner passes to :meth:`Sender.flush`; times are integer
milliseconds on the session's clock.
"""

from __future__ import annotations

from collections import deque

from .config import KCPConfig
from .rtt import HALF, MASK, MAX_RTT_SAMPLE_MS, CongestionWindow, RttEstimator
from .segment import AckSegment, encode_data

#: The peer's window end assumed until its first ACK (V2Ray's initial remote window).
INITIAL_REMOTE_WINDOW = 32


class SendSegment:
    """One numbered DATA payload, from :meth:`Sender.write` until acknowledged."""

    __slots__ = ("number", "payload", "timeout", "transmit", "acked")

    def __init__(self, number: int, payload: bytes) -> None:
        self.number = number
        self.payload = payload
        #: Session millisecond after which it is retransmitted (once transmitted).
        self.timeout = 0
        #: How many times it went on the wire.
        self.transmit = 0
        self.acked = False


class Sender:
    """Send queue and window, segments in flight, retransmission, ACK processing."""

    def __init__(self, conv: int, config: KCPConfig, rtt: RttEstimator) -> None:
        self.conv = conv
        self.rtt = rtt
        self.cc = CongestionWindow(config.congestion, config.sending_in_flight)
        self._mss = config.mss
        #: Next sequence number to assign.
        self.snd_nxt = 0
        #: Oldest unacknowledged number (``snd_nxt`` when nothing is outstanding).
        self.una = 0
        #: Segments not yet known to be acknowledged, in number order (may hold acked ones
        #: behind an unacked head).
        self.window: deque[SendSegment] = deque()
        #: Unacknowledged segments by number.
        self.index: dict[int, SendSegment] = {}
        #: Segments never transmitted, in number order.
        self.unsent: deque[SendSegment] = deque()
        #: End (exclusive) of the peer's receive window, as it last advertised.
        self.remote_wnd_end = INITIAL_REMOTE_WINDOW
        self.in_flight_total = 0
        #: ``una`` moved since the peer was last told (by DATA or PING).
        self.una_changed = False
        #: No more data: the session left Active/ReadyToClose.
        self.closed = False
        # statistics
        self.segments_sent = 0
        self.retransmissions = 0

    # ----------------------------------------------------------- application
    def write(self, data: bytes) -> None:
        """Queue ``data`` (non-empty), topping up the last unsent segment first."""
        mss = self._mss
        mv = memoryview(data)
        off = 0
        total = len(data)
        unsent = self.unsent
        if unsent:
            tail = unsent[-1]
            room = mss - len(tail.payload)
            if room > 0 and tail.transmit == 0 and not tail.acked:
                take = min(room, total)
                tail.payload += bytes(mv[:take])
                off = take
        window = self.window
        index = self.index
        nxt = self.snd_nxt
        while off < total:
            seg = SendSegment(nxt, bytes(mv[off : off + mss]))
            off += mss
            window.append(seg)
            index[nxt] = seg
            unsent.append(seg)
            nxt = (nxt + 1) & MASK
        self.snd_nxt = nxt

    def close(self) -> None:
        """Stop sending: forget every segment not yet acknowledged."""
        self.closed = True
        self.window.clear()
        self.index.clear()
        self.unsent.clear()

    # ----------------------------------------------------------------- input
    def process_receiving_next(self, receiving_next: int) -> None:
        """The peer has everything before ``receiving_next``."""
        win = self.window
        index = self.index
        changed = False
        # inlined wrap_ge: while win[0].number < receiving_next (wrapping)
        while win and ((win[0].number - receiving_next) & MASK) >= HALF:
            seg = win.popleft()
            if not seg.acked:
                seg.acked = True
                del index[seg.number]
            changed = True
        if changed:
            self._recompute_una()

    def _recompute_una(self) -> None:
        win = self.window
        while win and win[0].acked:
            win.popleft()
        una = win[0].number if win else self.snd_nxt
        if una != self.una:
            self.una = una
            self.una_changed = True

    def on_ack(self, seg: AckSegment, ms: int) -> None:
        """Process an ACK segment: peer window, cumulative and selective acks, RTT sample."""
        if self.closed:
            return
        if self.remote_wnd_end < seg.receiving_window:
            self.remote_wnd_end = seg.receiving_window
        self.process_receiving_next(seg.receiving_next)
        numbers = seg.numbers
        if not numbers:
            return
        index = self.index
        maxack = 0
        maxack_removed = False
        removed_any = False
        for n in numbers:
            s = index.pop(n, None)
            if s is not None:
                s.acked = True
                removed_any = True
                if self.in_flight_total > 0:
                    self.in_flight_total -= 1
            if n > maxack:
                maxack = n
                maxack_removed = s is not None
        if removed_any:
            self._recompute_una()
        if maxack_removed:
            rtt = self.rtt
            # fast resend: segments before the largest acked one are due sooner
            dec = rtt.rto // 3
            for s in self.window:
                if ((s.number - maxack) & MASK) < HALF:  # inlined wrap_ge(s.number, maxack)
                    break
                if not s.acked and s.transmit > 0 and s.timeout > dec:
                    s.timeout -= dec
            sample = (ms - seg.timestamp) & MASK
            if sample < MAX_RTT_SAMPLE_MS:
                rtt.update(sample, ms)

    # ---------------------------------------------------------------- output
    def flush(self, out: list[bytes], ms: int, tick: bool, option: int) -> bool:
        """Append due DATA segments to ``out``; True when a PING should announce ``una``.

        ``tick`` (the periodic timer) also retransmits timed-out segments and lets one
        probe segment past a closed peer window.
        """
        window = self.window
        if not window:
            if self.una_changed:
                self.una_changed = False
                return True
            return False
        append = out.append
        conv = self.conv
        una = self.una
        rto = self.rtt.rto
        timeout = ms + rto
        sent_any = False
        transmitted = 0
        if tick:
            avail = (self.remote_wnd_end - una) & MASK
            if avail > HALF:
                avail = 0
            cc = self.cc
            budget = cc.retransmit_budget(avail)
            sent = 0
            for seg in window:
                if seg.acked or seg.transmit == 0 or ms < seg.timeout:
                    continue
                seg.timeout = timeout
                seg.transmit += 1
                append(encode_data(conv, option, ms, seg.number, una, seg.payload))
                sent += 1
                if sent >= budget:
                    break
            if sent:
                sent_any = True
                transmitted = sent
                self.retransmissions += sent
                if cc.enabled and self.in_flight_total:
                    cc.on_loss(sent * 100 // self.in_flight_total, rto)
        # first transmissions, bounded by the peer's window
        limit = self.cc.send_limit(una, self.remote_wnd_end)
        unsent = self.unsent
        first = 0
        while unsent:
            seg = unsent[0]
            if seg.acked:
                unsent.popleft()
                continue
            n = seg.number
            if ((n - limit) & MASK) >= HALF or (tick and n == una):
                unsent.popleft()
                first += 1
                seg.timeout = timeout
                seg.transmit += 1
                append(encode_data(conv, option, ms, n, una, seg.payload))
                continue
            break
        if first:
            sent_any = True
            self.in_flight_total += first
            transmitted += first
        if transmitted:
            self.segments_sent += transmitted
        if self.una_changed:
            if sent_any:
                self.una_changed = False  # the DATA segments carried it
            elif tick or not window:
                # tell the peer our una so it stops re-acknowledging
                self.una_changed = False
                return True
        return False
