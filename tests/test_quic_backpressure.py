"""QUIC flow control, measured: 200 MB into a stalled reader must not grow either process.

Two vtwist processes: the client (SOCKS inbound -> VMess outbound over QUIC) and the server
(VMess inbound over QUIC -> freedom). A fast writer pushes 200 MB; the reader reads nothing
for a few seconds, then drains. Without flow control one of the processes would buffer what
the writer pushed during the stall (aioquic on its own doubles a stream's receive window as
data arrives); with it, the stalled reader's stream window stops the QUIC sender, whose full
send buffer pauses the side reading from the writer. VmRSS of both processes is sampled from
/proc while the transfer runs. Tested in both directions.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from .backpressure_support import StalledReaderPair


class QuicBackpressureTests(StalledReaderPair, SynchronousTestCase):
    """200 MB over VMess over QUIC into a reader that stalls first."""

    stream = {"network": "quic", "quicSettings": {"security": "aes-128-gcm", "key": "k"}}
    label = "quic"
    udp = True
    allowed_growth = 12 * 1024 * 1024
