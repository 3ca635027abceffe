"""Test doubles shared by the SOCKS tests: a transport with a local SOCKS server's addresses,
and (from :mod:`vtwist.testing`) an outbound whose connections the test controls."""

from __future__ import annotations

from vtwist.testing import doubles
from vtwist.testing.doubles import LogCapture
from vtwist.testing.tunnels import FakeOutbound, FakePacketSession, PendingConnect

__all__ = ["FakeOutbound", "FakePacketSession", "HalfCloseTransport", "LogCapture",
           "PendingConnect"]


class HalfCloseTransport(doubles.HalfCloseTransport):
    """:class:`vtwist.testing.doubles.HalfCloseTransport` with a local SOCKS server's
    addresses."""

    def __init__(self, host: tuple[str, int] = ("127.0.0.1", 1080),
                 peer: tuple[str, int] = ("127.0.0.1", 50000)) -> None:
        super().__init__(host, peer)
