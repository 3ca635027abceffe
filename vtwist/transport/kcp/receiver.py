"""The receiving half of an mKCP session (sans-IO, V2Ray 4.34 compatible).

:class:`Receiver` accepts DATA segments inside its window, reassembles them in order for
the application, and keeps the acknowledgements it owes: each received number is acked at
once (and again in the next such ACK, which covers one lost ACK), then re-acked every
``max(rto / 2, 20)`` ms until the peer's ``sending_next`` passes it.  Reading frees window; the new window end is advertised with the next ACK, or at once
(a window update) when the reader freed a quarter of the window.  ACK segments are encoded
into the list its owner passes to :meth:`Receiver.flush`.
"""

from __future__ import annotations

from heapq import heappop, heappush

from .rtt import HALF, MASK
from .segment import ACK_MAX_NUMBERS, DataSegment, encode_ack

#: Shortest re-acknowledgement interval (ms).
MIN_ACK_INTERVAL_MS = 20


class Receiver:
    """Receive window, reassembly buffer and the acknowledgements to send."""

    def __init__(self, conv: int, window: int) -> None:
        self.conv = conv
        #: Next number the application will read.
        self.rcv_nxt = 0
        #: Receive window (segments), from ``receive_window`` of the config.
        self.rcv_wnd = window
        #: Received, not yet read payloads by number.
        self.buffer: dict[int, bytes] = {}
        #: Owed acknowledgements: number -> [peer timestamp, next ack at (ms)].
        self.acks: dict[int, list[int]] = {}
        self._ack_heap: list[int] = []
        self._ack_new: list[int] = []
        #: Numbers of the last eager ACK, repeated in the next one.
        self._ack_recent: list[int] = []
        self._ack_dirty = False
        self._ack_cleared = False
        self._advertised_end = window
        # statistics
        self.segments_received = 0
        self.dropped_out_of_window = 0

    # ----------------------------------------------------------------- input
    def on_data(self, seg: DataSegment) -> None:
        """Take one DATA segment (dropped when outside the window)."""
        n = seg.number
        if ((n - self.rcv_nxt) & MASK) >= self.rcv_wnd:
            self.dropped_out_of_window += 1
            return
        self.segments_received += 1
        self.clear_acks(seg.sending_next)
        acks = self.acks
        e = acks.get(n)
        if e is None:
            acks[n] = [seg.timestamp, 0]
            heappush(self._ack_heap, n)
            self._ack_new.append(n)
        else:
            e[0] = seg.timestamp
            if e[1] != 0:
                e[1] = 0
                self._ack_new.append(n)
        self._ack_dirty = True
        buf = self.buffer
        if n not in buf:
            buf[n] = seg.payload

    def clear_acks(self, sending_next: int) -> None:
        """The peer sends nothing before ``sending_next`` any more: stop acking it."""
        heap = self._ack_heap
        if not heap or heap[0] >= sending_next:
            return
        acks = self.acks
        removed = False
        while heap and heap[0] < sending_next:
            if acks.pop(heappop(heap), None) is not None:
                removed = True
        if removed:
            # V2Ray then sends an (often empty) ACK on its next tick; vtwist does the same
            # on ticks but not eagerly, which would answer every una PING with an ACK.
            self._ack_cleared = True

    # ----------------------------------------------------------- application
    def has_data(self) -> bool:
        """True when in-order data waits for :meth:`read`."""
        return self.rcv_nxt in self.buffer

    def read(self) -> list[bytes]:
        """Pop all in-order data; this advances ``rcv_nxt`` and so the window."""
        buf = self.buffer
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

    def clear(self) -> None:
        """Forget buffered data and owed acknowledgements (the session is Terminated)."""
        self.buffer.clear()
        self.acks.clear()
        self._ack_heap.clear()
        self._ack_new.clear()
        self._ack_recent.clear()

    # ---------------------------------------------------------------- output
    def _emit(self, out: list[bytes], option: int, numbers: list[int], ts: int) -> None:
        end = (self.rcv_nxt + self.rcv_wnd) & MASK
        out.append(encode_ack(self.conv, option, end, self.rcv_nxt, ts, numbers))
        self._advertised_end = end

    def flush(self, out: list[bytes], ms: int, full: bool, option: int, rto: int) -> None:
        """Append the ACK segments due at ``ms`` to ``out``.

        Without ``full`` only numbers received since the last flush are acked (plus a
        window update if one is due); with ``full`` (the periodic tick) every owed ack
        whose re-ack time has come, and an ACK whenever anything changed.
        """
        acks = self.acks
        dirty = self._ack_dirty or (full and self._ack_cleared)
        if not acks and not dirty:
            return
        interval = max(rto // 2, MIN_ACK_INTERVAL_MS)
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
                self._emit(out, option, due, ts)
                due = []
                ts = 0
                dirty = False
        self._ack_new.clear()
        if dirty or due:
            if full:
                for n in later:
                    if len(due) >= ACK_MAX_NUMBERS:
                        break
                    due.append(n)
            else:
                # an eager ACK repeats the previous one's numbers (still owed): one lost
                # ACK then costs the sender no spurious resend
                recent = self._ack_recent
                self._ack_recent = due[:]
                for n in recent:
                    if len(due) >= ACK_MAX_NUMBERS:
                        break
                    if n in acks:
                        due.append(n)
            self._emit(out, option, due, ts)
        elif not full:
            return
        self._ack_dirty = False
        self._ack_cleared = False
