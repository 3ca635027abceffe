"""The QUIC connection's pacer (:class:`vtwist.transport.quic.connection.BurstPacer`): the
bursts aioquic's pacer allows at low rates stay allowed at high ones."""

from __future__ import annotations

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.recovery import QuicPacketPacer
from twisted.trial.unittest import SynchronousTestCase

from vtwist.transport.quic.connection import BurstPacer, FlowQuicConnection

MTU = 1452


def burst(pacer: QuicPacketPacer, congestion_window: int, rtt: float = 0.001) -> int:
    """How many datagrams the pacer lets out at once after a long pause."""
    pacer.update_rate(congestion_window=congestion_window, smoothed_rtt=rtt)
    now = 10.0
    pacer.evaluation_time = 0.0  # a long pause: the bucket refills to its maximum
    sent = 0
    while pacer.next_send_time(now) is None and sent < 1000:
        pacer.update_after_send(now)
        sent += 1
    return sent


class BurstPacerTests(SynchronousTestCase):

    def test_large_window_keeps_its_bursts(self) -> None:
        """A 66 MB window at the 1 ms RTT floor (measured on loopback): aioquic's pacer lets
        one datagram out per wake-up, vtwist's the same 16 as at moderate rates."""
        self.assertEqual(burst(QuicPacketPacer(max_datagram_size=MTU), 66_000_000), 1)
        self.assertEqual(burst(BurstPacer(max_datagram_size=MTU), 66_000_000), 16)
        self.assertEqual(burst(QuicPacketPacer(max_datagram_size=MTU), 1_200_000), 16)

    def test_lower_rates_unchanged(self) -> None:
        """Where aioquic's bucket holds its burst, the two pacers agree exactly."""
        for window, rtt in ((30_000, 0.001), (1_200_000, 0.001), (200_000, 0.05),
                            (5_000, 0.2)):
            ours, theirs = BurstPacer(max_datagram_size=MTU), \
                QuicPacketPacer(max_datagram_size=MTU)
            ours.update_rate(window, rtt)
            theirs.update_rate(window, rtt)
            self.assertEqual((ours.packet_time, ours.bucket_max),
                             (theirs.packet_time, theirs.bucket_max), (window, rtt))
            self.assertEqual(burst(ours, window, rtt), burst(theirs, window, rtt))

    def test_connections_use_it(self) -> None:
        connection = FlowQuicConnection(
            configuration=QuicConfiguration(is_client=True), window=1 << 20)
        self.assertIs(type(connection._loss._pacer), BurstPacer)
