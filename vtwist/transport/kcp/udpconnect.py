"""Connect a client's UDP socket to its peer until the peer answers, then disconnect it.

While connected, the kernel reports an ICMP "port unreachable" for the peer as a socket
error: the mKCP client takes it as a refusal (nothing listens there). Once the peer has
answered, the socket is disconnected again (``connect`` with ``AF_UNSPEC``, Linux and the
BSDs), so a later ICMP error (the server restarting) is ignored, as V2Ray ignores it.
Where that is not possible the socket is never connected (ICMP errors are then ignored
from the start, as before).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import sys
from typing import Any

_libc: Any = None


def _connect_fn() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        except OSError:
            _libc = False
    return getattr(_libc, "connect", None) if _libc else None


def can_disconnect() -> bool:
    """True where a connected UDP socket can be disconnected again."""
    return sys.platform.startswith("linux") and _connect_fn() is not None


def connect(sock: socket.socket, peer: tuple[str, int]) -> bool:
    """Connect ``sock`` to ``peer`` when it can be undone later; True if connected."""
    if not can_disconnect():
        return False
    try:
        sock.connect(peer)
    except OSError:
        return False
    return True


def disconnect(sock: socket.socket, bound: Any) -> bool:
    """Dissolve ``sock``'s association with its peer (``AF_UNSPEC``), keeping its local
    port: Linux releases a port that was picked by the kernel, so it is bound again to
    ``bound`` (``getsockname()`` before :func:`connect`). True on success."""
    fn = _connect_fn()
    if fn is None:
        return False
    address = struct.pack("=H14x", socket.AF_UNSPEC)
    if fn(sock.fileno(), address, len(address)) != 0:
        return False
    try:
        if sock.getsockname()[1] == 0:
            sock.bind(bound)
    except OSError:
        return False
    return True


def refused(sock: socket.socket) -> bool:
    """True when the socket holds an ICMP refusal (``ECONNREFUSED``) for its peer."""
    import errno

    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    except OSError:
        return False
