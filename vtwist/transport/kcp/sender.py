"""The sending half of an mKCP session (sans-IO, V2Ray 4.34 compatible on the wire).

:class:`Sender` cuts application bytes into numbered segments, keeps them until they are
acknowledged, transmits them within the peer's window and retransmits lost ones.  It
encodes DATA segments into the list its owner passes to :meth:`Sender.flush`; times are
integer milliseconds on the session's clock.

*When* to resend is the sender's own business (the peer sees only DATA segments), and
vtwist differs from V2Ray there, which resends a segment ``rto`` after it went out (a
deadline each later ACK pulls in by ``rto / 3``), checked on the ``tti`` tick:

* **Loss by transmission order** (RACK, RFC 8985): every transmission is numbered in the
  order it went out.  Once the peer acknowledges a transmission, every earlier one still
  unacknowledged after that transmission's round trip plus a reordering allowance (1 ms,
  up to ``srtt`` while resends turn out spurious) is lost and resent at once — on the
  flush that follows the ACK, or when the allowance ends (:attr:`Sender.loss_check_at`, a
  session timer).  A log of transmissions in order makes this O(1) per transmission.
  This is what keeps the receive window moving at a few percent loss: a hole at the
  window's head is refilled a round trip after it was made, not 2-3.
* **Two copies** of each such resend (unless ``congestion`` is on): a lost resend holds
  the window a round trip more, and at 5 % loss most windows hold one.  The cost is one
  segment per loss, still within the peer's window.
* **Timeouts** resend what is ``rto`` old only when no ACK acknowledged anything new for
  an ``rto`` (as TCP's timer): while ACKs flow, a burst's tail may take longer than
  ``rto`` to be acknowledged without being lost, and order-based detection finds the
  losses.
* **RTT samples** come only from ACKs that echo the send time of a segment they newly
  acknowledge (so neither a re-acknowledgement of an old number nor an ACK of an earlier
  transmission of a resent segment counts).
"""

from __future__ import annotations

from collections import deque

from .config import KCPConfig
from .rtt import HALF, MASK, MAX_RTT_SAMPLE_MS, CongestionWindow, RttEstimator
from .segment import AckSegment, encode_data

#: The peer's window end assumed until its first ACK (V2Ray's initial remote window).
INITIAL_REMOTE_WINDOW = 32
#: Reordering allowance of order-based loss detection, on top of the round trip of the
#: newest acknowledged transmission: :data:`MIN_REORDER_MS` (the clock's granularity)
#: while resends are rarely spurious, up to :data:`MAX_REORDER_STEPS` steps of
#: ``srtt / REORDER_DIVISOR`` (one ``srtt``, as RFC 8985) while ACKs showing spurious
#: resends come more often than one per REORDER_SCORE_SPURIOUS batches of resends.  (A
#: resend also turns out spurious when the ACKs of the original were lost; that alone
#: must not slow loss detection down.)
REORDER_DIVISOR = 4
MAX_REORDER_STEPS = 4
MIN_REORDER_MS = 1
REORDER_SCORE_SPURIOUS = 8
REORDER_SCORE_STEP = 16
REORDER_SCORE_MAX = REORDER_SCORE_STEP * (MAX_REORDER_STEPS + 1)


class SendSegment:
    """One numbered DATA payload, from :meth:`Sender.write` until acknowledged."""

    __slots__ = ("number", "payload", "timeout", "transmit", "acked", "sent_at", "order")

    def __init__(self, number: int, payload: bytes) -> None:
        self.number = number
        self.payload = payload
        #: Session millisecond after which it is retransmitted (once transmitted).
        self.timeout = 0
        #: How many times it went on the wire.
        self.transmit = 0
        self.acked = False
        #: Session millisecond of its latest transmission.
        self.sent_at = 0
        #: Place of its latest transmission in the sender's transmission order.
        self.order = -1


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
        #: Transmissions in order: (order, sent_at, segment, its transmit count then).
        self._sent_log: deque[tuple[int, int, SendSegment, int]] = deque()
        #: Transmissions so far (the order of the next one).
        self._order = 0
        #: Order of the newest transmission known to have arrived (-1: none yet).
        self.rack_order = -1
        #: Its round trip (ms).
        self.rack_rtt = 0
        self._rack_due = False
        # scratch of on_ack
        self._ack_spurious = False
        self._ack_order = -1
        self._ack_sent = 0
        self._ack_matched = False
        #: Session millisecond when a transmission before ``rack_order`` will have waited
        #: out its reordering allowance (None: nothing waits).
        self.loss_check_at: int | None = None
        #: Session millisecond when an ACK last acknowledged something new.
        self.last_progress = 0
        # statistics
        self.segments_sent = 0
        self.retransmissions = 0
        #: Of ``retransmissions``, those sent because a later segment arrived (not on timeout).
        self.fast_retransmissions = 0
        #: Second copies of fast retransmissions (not counted above).
        self.duplicates = 0
        #: Send every fast retransmission twice (off when the congestion window is on:
        #: there, loss means a full path, and copies would add to it).
        self._duplicate = not config.congestion
        #: Resends found spurious (an earlier transmission was acknowledged after all).
        self.spurious_resends = 0
        #: Evidence of reordering: + REORDER_SCORE_SPURIOUS per ACK that shows spurious
        #: resends, -1 per batch of resends; a step of allowance per REORDER_SCORE_STEP.
        self._reorder_score = 0

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
        self._sent_log.clear()
        self.loss_check_at = None

    # ----------------------------------------------------------------- input
    def process_receiving_next(self, receiving_next: int, ts: int = -1) -> None:
        """The peer has everything before ``receiving_next``.

        ``ts`` is the time stamp echoed by the ACK that says so (-1 when none, e.g. a
        PING): see :meth:`_delivered`.
        """
        win = self.window
        index = self.index
        changed = False
        delivered = self._delivered
        # inlined wrap_ge: while win[0].number < receiving_next (wrapping)
        while win and ((win[0].number - receiving_next) & MASK) >= HALF:
            seg = win.popleft()
            if not seg.acked:
                seg.acked = True
                del index[seg.number]
                delivered(seg, ts)
            changed = True
        if changed:
            self._recompute_una()

    def _delivered(self, seg: SendSegment, ts: int) -> None:
        """``seg`` is newly acknowledged by an ACK echoing ``ts``: note its transmission
        as arrived when that is unambiguous (first transmission, or the echo is its send
        time), and whether the echo gives an RTT sample."""
        sent = seg.sent_at & MASK
        if sent == ts:
            self._ack_matched = True
        elif seg.transmit != 1:
            if ts >= 0 and 0 < ((sent - ts) & MASK) < HALF:
                # acknowledged with a time stamp older than our resend: an earlier
                # transmission arrived after all, the resend was spurious (reordering)
                self.spurious_resends += 1
                self._ack_spurious = True
            return
        if seg.order > self._ack_order:
            self._ack_order = seg.order
            self._ack_sent = seg.sent_at

    @property
    def reorder_steps(self) -> int:
        """Steps of ``srtt / REORDER_DIVISOR`` in the reordering allowance (0..4)."""
        return min(MAX_REORDER_STEPS, self._reorder_score // REORDER_SCORE_STEP)

    def _recompute_una(self) -> None:
        win = self.window
        while win and win[0].acked:
            win.popleft()
        if not win:
            self._sent_log.clear()
            self.loss_check_at = None
        una = win[0].number if win else self.snd_nxt
        if una != self.una:
            self.una = una
            self.una_changed = True

    def on_ack(self, seg: AckSegment, ms: int) -> None:
        """Process an ACK segment: peer window, cumulative and selective acks, the newest
        transmission known to have arrived, RTT sample."""
        if self.closed:
            return
        if self.remote_wnd_end < seg.receiving_window:
            self.remote_wnd_end = seg.receiving_window
        ts = seg.timestamp
        if ((ms - ts) & MASK) >= HALF:
            ts = -1  # in our future: bogus, ignored
        self._ack_order = -1
        self._ack_sent = 0
        self._ack_matched = False
        self._ack_spurious = False
        una = self.una
        self.process_receiving_next(seg.receiving_next, ts)
        index = self.index
        removed_any = self.una != una
        delivered = self._delivered
        for n in seg.numbers:
            s = index.pop(n, None)
            if s is not None:
                s.acked = True
                removed_any = True
                delivered(s, ts)
                if self.in_flight_total > 0:
                    self.in_flight_total -= 1
        if not removed_any:
            return
        self._recompute_una()
        self.last_progress = ms
        if self._ack_spurious and self._reorder_score < REORDER_SCORE_MAX:
            # once per ACK: the ACKs of a burst lost together are one event
            self._reorder_score += REORDER_SCORE_SPURIOUS
        if self._ack_order > self.rack_order:
            self.rack_order = self._ack_order
            self.rack_rtt = ms - self._ack_sent
            self._rack_due = True
        if self._ack_matched:
            sample = (ms - ts) & MASK
            if sample < MAX_RTT_SAMPLE_MS:
                self.rtt.update(sample, ms)

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
        log = self._sent_log
        check = self.loss_check_at
        if self._rack_due or (check is not None and ms >= check):
            self._rack_due = False
            fast = self._resend_lost(out, ms, option, timeout)
            if fast:
                sent_any = True
                transmitted = fast
        order = self._order
        # timeouts: only once no ACK acknowledged anything new for an rto (while ACKs
        # flow, losses are found by time stamps; a burst's tail may take longer than rto
        # to be acknowledged without being lost)
        if tick and ms - self.last_progress >= rto:
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
                seg.sent_at = ms
                seg.order = order
                log.append((order, ms, seg, seg.transmit))
                order += 1
                append(encode_data(conv, option, ms, seg.number, una, seg.payload))
                sent += 1
                if sent >= budget:
                    break
            if sent:
                sent_any = True
                transmitted += sent
                self.retransmissions += sent
                if cc.enabled and self.in_flight_total:
                    cc.on_loss(sent * 100 // self.in_flight_total, rto)
                # the entries of what was just resent are stale: drop them from the front
                # (a silent peer would otherwise grow the log by a window per rto)
                while log:
                    entry = log[0]
                    seg = entry[2]
                    if not seg.acked and seg.transmit == entry[3]:
                        break
                    log.popleft()
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
                seg.transmit = 1
                seg.sent_at = ms
                seg.order = order
                log.append((order, ms, seg, 1))
                order += 1
                append(encode_data(conv, option, ms, n, una, seg.payload))
                continue
            break
        self._order = order
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

    def _resend_lost(self, out: list[bytes], ms: int, option: int, timeout: int) -> int:
        """Resend transmissions made before the newest one known to have arrived, still
        unacknowledged after its round trip plus the reordering allowance; returns how
        many.  Sets :attr:`loss_check_at` when one has yet to wait that long."""
        log = self._sent_log
        rack = self.rack_order
        reo = self.reorder_steps * self.rtt.srtt // REORDER_DIVISOR
        if reo < MIN_REORDER_MS:
            reo = MIN_REORDER_MS
        wait = self.rack_rtt + reo
        self.loss_check_at = None
        resent: list[SendSegment] = []
        while log:
            order, sent_at, seg, transmit = log[0]
            if seg.acked or seg.transmit != transmit:
                log.popleft()  # acknowledged, or resent since
                continue
            if order >= rack:
                break
            if ms - sent_at < wait:
                self.loss_check_at = sent_at + wait
                break
            log.popleft()
            resent.append(seg)
        if not resent:
            return 0
        conv = self.conv
        una = self.una
        append = out.append
        order = self._order
        dup = self._duplicate
        for seg in resent:
            seg.timeout = timeout
            seg.transmit += 1
            seg.sent_at = ms
            seg.order = order
            log.append((order, ms, seg, seg.transmit))
            order += 1
            append(encode_data(conv, option, ms, seg.number, una, seg.payload))
        if dup:
            # a second copy of each resend: a resend lost again costs a round trip more
            # of a stalled window (at 5 % loss, most windows hold such a hole); the
            # copies go after the batch, so one burst does not take both
            for seg in resent:
                append(encode_data(conv, option, ms, seg.number, una, seg.payload))
            self.duplicates += len(resent)
        self._order = order
        n = len(resent)
        if self._reorder_score:
            self._reorder_score -= 1  # per batch: the ACKs of a burst lost together are one event
        self.retransmissions += n
        self.fast_retransmissions += n
        cc = self.cc
        if cc.enabled and self.in_flight_total:
            cc.on_loss(n * 100 // self.in_flight_total, self.rtt.rto)
        return n
