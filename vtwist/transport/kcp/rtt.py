"""mKCP round-trip estimation and congestion window (sans-IO, V2Ray 4.34 compatible).

:class:`RttEstimator` turns ACK timestamps into V2Ray's ``rto`` (and adopts the peer's
RTO from its commands when it has had no sample for 3 s); :class:`CongestionWindow` is
V2Ray's optional loss-driven control window.  Like the rest of the ARQ, nothing here reads
a clock: times are integer milliseconds on the session's clock, passed in by the caller.

The 32-bit wrap-around helpers used by the sender and the receiver live here too.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x7FFFFFFF

#: A peer's RTO is adopted only when the estimate is at least this old (ms).
PEER_RTO_AFTER_MS = 3000
#: Samples of this many milliseconds or more are ignored.
MAX_RTT_SAMPLE_MS = 10000
#: Largest ``srtt + k * rttvar`` before the 5/4 factor.
MAX_RTO_BASE_MS = 10000


def wrap_ge(a: int, b: int) -> bool:
    """``a >= b`` for 32-bit wrapping counters (sequence numbers, timestamps)."""
    return ((a - b) & MASK) < HALF


class RttEstimator:
    """Smoothed RTT, its variation and the retransmission timeout, in milliseconds."""

    __slots__ = ("rto", "srtt", "rttvar", "min_rtt", "updated")

    def __init__(self, min_rtt: int) -> None:
        #: Retransmission timeout (ms); V2Ray starts at 100.
        self.rto = 100
        #: Smoothed round trip (ms); 0 until the first sample.
        self.srtt = 0
        #: Round-trip variation (ms).
        self.rttvar = 0
        #: Floor for ``srtt`` and for an adopted peer RTO (the configured ``tti``).
        self.min_rtt = min_rtt
        #: Session millisecond of the last update of ``rto``.
        self.updated = 0

    def update(self, rtt: int, ms: int) -> None:
        """Fold one round-trip sample ``rtt`` (ms) taken at ``ms`` into the estimate."""
        if rtt > HALF:
            return
        min_rtt = self.min_rtt
        if self.srtt == 0:
            self.srtt = rtt
            self.rttvar = rtt // 2
        else:
            delta = abs(rtt - self.srtt)
            self.rttvar = (3 * self.rttvar + delta) // 4
            self.srtt = (7 * self.srtt + rtt) // 8
            if self.srtt < min_rtt:
                self.srtt = min_rtt
        if min_rtt < 4 * self.rttvar:
            x = self.srtt + 4 * self.rttvar
        else:
            x = self.srtt + self.rttvar
        if x > MAX_RTO_BASE_MS:
            x = MAX_RTO_BASE_MS
        # never 0 (a 0 ms first sample on loopback would make every tick resend)
        self.rto = max(1, x * 5 // 4)
        self.updated = ms

    def peer_rto(self, peer_rto: int, ms: int) -> None:
        """A command carried the peer's RTO: adopt it when ours is 3 s old."""
        if ms - self.updated >= PEER_RTO_AFTER_MS:
            self.rto = max(peer_rto, self.min_rtt)
            self.updated = ms


class CongestionWindow:
    """V2Ray's control window: shrinks on heavy retransmission, grows on light."""

    __slots__ = ("enabled", "in_flight_limit", "window")

    def __init__(self, enabled: bool, in_flight_limit: int) -> None:
        #: ``kcpSettings.congestion``; when False only the peer's window limits sending.
        self.enabled = enabled
        #: ``sending_in_flight`` of the config: the sender's own window (segments).
        self.in_flight_limit = in_flight_limit
        #: The control window (segments), used only when ``enabled``.
        self.window = in_flight_limit

    def retransmit_budget(self, avail: int) -> int:
        """How many segments one tick may retransmit, given ``avail`` of the peer's window."""
        cwnd = self.in_flight_limit if self.in_flight_limit < avail else avail
        if self.enabled and cwnd > self.window:
            cwnd = self.window
        return cwnd * 20

    def send_limit(self, una: int, remote_wnd_end: int) -> int:
        """First sequence number that may not be sent for the first time yet."""
        if self.enabled:
            cap = (una + self.window) & MASK
            if wrap_ge(remote_wnd_end, cap):
                return cap
        return remote_wnd_end

    def on_loss(self, rate: int, rto: int) -> None:
        """Adjust the window after a tick that retransmitted ``rate`` % of the segments in flight."""
        if rto == 0:
            return
        if rate >= 15:
            self.window = self.window * 3 // 4
        elif rate <= 5:
            self.window += self.window // 4
        self.window = max(16, min(self.window, 2 * self.in_flight_limit))
