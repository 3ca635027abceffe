"""Sending a QUIC connection's datagrams on a UDP socket, many per system call.

aioquic hands over a burst of datagrams per turn (up to its pacer's bucket, 16 full ones);
one ``sendto`` each was a tenth of a sending connection's time. On Linux, UDP generic
segmentation offload (``UDP_SEGMENT``, kernel >= 4.18) sends a run of equal-sized datagrams
to one address as one buffer that the kernel cuts into those same datagrams: the peer sees
exactly what separate ``sendto`` calls would have sent. It needs only the standard library
(``socket.sendmsg`` with a control message). Where the kernel or the route refuses it, the
writer falls back to one ``sendto`` per datagram for good.
"""

from __future__ import annotations

import errno
import socket
import struct
import sys
from collections.abc import Iterable
from typing import Any

#: ``setsockopt``/cmsg level and option of UDP GSO (not named by Python 3.11's socket).
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
#: The kernel's cap on segments per send (UDP_MAX_SEGMENTS of older kernels) ...
MAX_SEGMENTS = 64
#: ... and on the buffer (one IPv4 UDP payload).
MAX_BUFFER = 65507
#: Errors meaning "no GSO here": switch to one datagram per call.
_NO_GSO = {errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.EMSGSIZE}


class DatagramWriter:
    """``writer(data, addr)`` sends one datagram; ``writer.many(datagrams)`` sends a burst
    of ``(data, addr)``, equal-sized runs as one GSO send where the kernel allows it.
    Errors of a single send are raised (OSError); :meth:`many` drops what cannot be sent
    (QUIC retransmits it) and says how many datagrams were dropped."""

    def __init__(self, sock: socket.socket, gso: bool | None = None) -> None:
        self.sock = sock
        self.sendto = sock.sendto
        self.gso = sys.platform.startswith("linux") if gso is None else gso

    def __call__(self, data: bytes, addr: Any) -> None:
        self.sendto(data, addr)

    def many(self, datagrams: Iterable[tuple[bytes, Any]]) -> int:
        """Send every datagram in order; returns how many were dropped."""
        items = datagrams if isinstance(datagrams, list) else list(datagrams)
        if not self.gso or len(items) < 2:
            return self._each(items)
        dropped = 0
        count = len(items)
        i = 0
        while i < count:
            data, addr = items[i]
            size = len(data)
            limit = min(MAX_SEGMENTS, MAX_BUFFER // max(size, 1))
            j = i + 1
            while j < count and j - i < limit and len(items[j][0]) == size \
                    and items[j][1] == addr:
                j += 1
            # A shorter datagram may close the run (GSO's last segment can be short).
            if j < count and j - i < limit and len(items[j][0]) < size \
                    and items[j][1] == addr:
                j += 1
            if j - i == 1:
                dropped += self._each(items[i:j])
            elif not self.gso:
                dropped += self._each(items[i:j])
            else:
                dropped += self._segmented(items[i:j], size, addr)
            i = j
        return dropped

    def _segmented(self, run: list[tuple[bytes, Any]], size: int, addr: Any) -> int:
        try:
            self.sock.sendmsg([b"".join(data for data, _ in run)],
                              [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))], 0, addr)
            return 0
        except OSError as e:
            if e.errno not in _NO_GSO:
                return len(run)  # a full buffer, an unreachable peer: QUIC resends
            self.gso = False
        return self._each(run)

    def _each(self, items: list[tuple[bytes, Any]]) -> int:
        dropped = 0
        sendto = self.sendto
        for data, addr in items:
            try:
                sendto(data, addr)
            except OSError:
                dropped += 1
        return dropped


def datagram_writer(udp: Any) -> Any:
    """The writer for a Twisted UDP port (its socket's own calls: Twisted's ``Port.write``
    parses the address twice per datagram), or the port's ``write`` without a socket."""
    sock = getattr(udp, "socket", None)
    return DatagramWriter(sock) if sock is not None else udp.write
