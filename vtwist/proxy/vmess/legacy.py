"""Legacy VMess header (alterId > 0): HMAC-MD5 time auth, AES-128-CFB instruction.

Kept apart from the AEAD code so it can be switched off (V2Ray 5 and Xray dropped it).
Sans-IO: time is always passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from vtwist.proxy.vmess.body import aes_cfb

#: The server accepts legacy timestamps within this many seconds of its clock.
LEGACY_WINDOW = 120


def legacy_auth(id_bytes: bytes, timestamp: int) -> bytes:
    """Auth = HMAC-MD5(key = ID bytes, msg = BE64(ts))."""
    return hmac.digest(id_bytes, struct.pack(">Q", timestamp & 0xFFFFFFFFFFFFFFFF), "md5")


def legacy_header_iv(timestamp: int) -> bytes:
    """Header IV = MD5(BE64(ts) x 4)."""
    return hashlib.md5(struct.pack(">Q", timestamp & 0xFFFFFFFFFFFFFFFF) * 4).digest()


def seal_legacy_request(auth_id_bytes: bytes, main_cmd_key: bytes, timestamp: int,
                        instruction: bytes) -> bytes:
    """Auth (16) || AES-128-CFB(main cmdKey, IV(ts), instruction)."""
    enc = aes_cfb(main_cmd_key, legacy_header_iv(timestamp), encrypt=True)
    return legacy_auth(auth_id_bytes, timestamp) + enc.update(instruction)


def header_decryptor(main_cmd_key: bytes, timestamp: int):
    """The streaming CFB decryptor for a legacy instruction sent at ``timestamp``."""
    return aes_cfb(main_cmd_key, legacy_header_iv(timestamp), encrypt=False)


def seal_legacy_response(resp_key: bytes, resp_iv: bytes, plain: bytes):
    """(wire bytes, CFB encryptor) of a legacy response header.

    The encryptor is returned because a legacy-security body continues the same stream.
    """
    enc = aes_cfb(resp_key, resp_iv, encrypt=True)
    return enc.update(plain), enc


@dataclass(frozen=True, slots=True)
class LegacyMatch:
    """A legacy auth hit: which user, which of its IDs (0 = main), and the timestamp."""

    user_index: int
    id_index: int
    timestamp: int


class LegacyAuthTable:
    """Precomputed HMAC-MD5 hashes for every ID and every second of the window.

    Like V2Ray's table but slid one second at a time: ``update(now)`` adds the seconds
    that entered ``[now - 120, now + 120]`` and drops those that left it. An entry whose
    request later failed is *tainted* and refused until it leaves the window.
    """

    def __init__(self, ids: Sequence[Sequence[bytes]], window: int = LEGACY_WINDOW) -> None:
        # ids[user_index] = [main id, alter 1, ...]
        self._ids = [list(x) for x in ids]
        self._window = window
        self._table: dict[bytes, tuple[int, int, int]] = {}
        self._seconds: deque[tuple[int, list[bytes]]] = deque()
        self._tainted: set[bytes] = set()
        self._lo: int | None = None
        self._hi: int | None = None

    def __len__(self) -> int:
        return len(self._table)

    def _add_second(self, ts: int) -> None:
        keys: list[bytes] = []
        msg = struct.pack(">Q", ts & 0xFFFFFFFFFFFFFFFF)
        table = self._table
        for ui, id_list in enumerate(self._ids):
            for ii, id_bytes in enumerate(id_list):
                h = hmac.digest(id_bytes, msg, "md5")
                table[h] = (ui, ii, ts)
                keys.append(h)
        self._seconds.append((ts, keys))

    def update(self, now: float) -> None:
        """Slide the window to ``now``."""
        now_s = int(now)
        lo, hi = now_s - self._window, now_s + self._window
        if self._hi is None or lo > self._hi or hi < (self._lo or 0):
            self._table.clear()
            self._seconds.clear()
            self._tainted.clear()
            for ts in range(lo, hi + 1):
                self._add_second(ts)
        else:
            for ts in range(self._hi + 1, hi + 1):
                self._add_second(ts)
            while self._seconds and self._seconds[0][0] < lo:
                _, keys = self._seconds.popleft()
                for k in keys:
                    entry = self._table.get(k)
                    if entry is not None and entry[2] < lo:
                        del self._table[k]
                    self._tainted.discard(k)
        self._lo, self._hi = lo, hi

    def lookup(self, auth: bytes, now: float) -> LegacyMatch | None:
        """The user, ID and timestamp for a 16-byte legacy auth, or None."""
        self.update(now)
        key = bytes(auth)
        entry = self._table.get(key)
        if entry is None or key in self._tainted:
            return None
        return LegacyMatch(*entry)

    def taint(self, auth: bytes) -> None:
        """Refuse this auth value from now on (until it leaves the window)."""
        key = bytes(auth)
        if key in self._table:
            self._tainted.add(key)
