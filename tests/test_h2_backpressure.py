"""HTTP/2 and gRPC flow control, measured: 200 MB into a stalled reader must not grow either
process.

Two vtwist processes: the client (SOCKS inbound -> VMess outbound over h2 or grpc) and the
server (VMess inbound -> freedom). A fast writer pushes 200 MB; the reader reads nothing for a
few seconds, then drains. The stalled side's relay pauses its HTTP/2 stream, which then
acknowledges nothing, so the peer's stream window runs out; the peer's stream buffer passes its
mark and pauses the side reading from the writer. Without that, a process would buffer what
the writer pushed during the stall. VmRSS of both processes is sampled from /proc while the
transfer runs. Tested in both directions.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from .backpressure_support import StalledReaderPair


class H2BackpressureTests(StalledReaderPair, SynchronousTestCase):
    """200 MB over VMess over HTTP/2 (h2c) into a reader that stalls first."""

    stream = {"network": "h2", "httpSettings": {"path": "/bp"}}
    label = "h2"


class GunBackpressureTests(H2BackpressureTests):
    """The same over gRPC gun (h2c)."""

    stream = {"network": "grpc", "grpcSettings": {"serviceName": "bp"}}
    label = "grpc"


class MultiBackpressureTests(H2BackpressureTests):
    """The same over gRPC multi mode (h2c)."""

    stream = {"network": "grpc", "grpcSettings": {"serviceName": "bp", "multiMode": True}}
    label = "grpc multi"


class GunTLSBackpressureTests(H2BackpressureTests):
    """The same over gRPC gun with TLS (the TLS layer's producer pauses reach HTTP/2)."""

    stream = {"network": "grpc", "grpcSettings": {"serviceName": "bp"}}
    label = "grpc+tls"
    tls = True
