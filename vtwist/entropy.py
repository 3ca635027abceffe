"""Random bytes without a system call each: :class:`RandomPool` hands out slices of an
``os.urandom`` block, each byte once.

Keys, IVs and nonces taken from it are as strong as ``os.urandom``'s (they are its bytes);
what it saves is the ``getrandom`` call per value, several per VMess connection. A forked
child drops what its parent fetched, so the two never hand out the same bytes.
"""

from __future__ import annotations

import os

__all__ = ["POOL", "RandomPool", "random_bytes"]


class RandomPool:
    """``os.urandom`` fetched ``size`` bytes at a time; each byte handed out once."""

    __slots__ = ("size", "buffer", "at")

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.buffer = b""
        self.at = 0

    def drop(self) -> None:
        """Forget what is left (a forked child must not hand out its parent's bytes)."""
        self.buffer = b""
        self.at = 0

    def take(self, n: int) -> bytes:
        """``n`` fresh random bytes (more than ``size``: one ``os.urandom`` of their own)."""
        at = self.at
        end = at + n
        if end > len(self.buffer):
            if n > self.size:
                return os.urandom(n)
            self.buffer = os.urandom(self.size)
            at, end = 0, n
        self.at = end
        return self.buffer[at:end]

    __call__ = take


#: The process's pool for keys, IVs, nonces and WebSocket masks (one reactor thread takes
#: from it).
POOL = RandomPool()
os.register_at_fork(after_in_child=POOL.drop)

#: ``n`` random bytes from the process's pool (``os.urandom``'s, without a call each).
random_bytes = POOL.take
