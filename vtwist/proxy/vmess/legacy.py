"""Legacy VMess header (alterId > 0): HMAC-MD5 time auth, AES-128-CFB instruction.

Kept apart from the AEAD code so it can be switched off (V2Ray 5 and Xray dropped it).
Sans-IO: time is always passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from array import array
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


_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _md5_pads(key: bytes) -> tuple:
    """Inner and outer MD5 states of HMAC-MD5 keyed with ``key`` (16 bytes)."""
    k = bytes(key).ljust(64, b"\0")
    return hashlib.md5(k.translate(_IPAD)), hashlib.md5(k.translate(_OPAD))


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

    Memory: each second is one sorted blob of 16-byte hashes plus a parallel array of
    (user, id) indexes, about 20 bytes per entry. Measured: 500 users with alterId 4 and
    500 with alterId 0 (3,000 IDs x 241 s = 723,000 entries) take ~15 MB and 1.8 s to
    build; 1,000 users with alterId 0 about 5 MB. A lookup is a binary search in each of
    the 241 blobs (~0.65 ms for a miss).
    """

    def __init__(self, ids: Sequence[Sequence[bytes]], window: int = LEGACY_WINDOW) -> None:
        # ids[user_index] = [main id, alter 1, ...]
        self._ids = [list(x) for x in ids]
        # HMAC-MD5 with the keyed inner/outer MD5 states prepared once per ID
        self._keyed = [[(ui << 16) | ii, *_md5_pads(id_bytes)]
                       for ui, id_list in enumerate(self._ids)
                       for ii, id_bytes in enumerate(id_list)]
        self._window = window
        self._seconds: deque[tuple[int, bytes, array]] = deque()
        self._tainted: dict[bytes, int] = {}  # auth -> its second, in taint order
        self._count = 0
        self._lo: int | None = None
        self._hi: int | None = None

    def __len__(self) -> int:
        return self._count

    def _second(self, ts: int) -> tuple[int, bytes, array]:
        msg = struct.pack(">Q", ts & 0xFFFFFFFFFFFFFFFF)
        entries = []
        append = entries.append
        for value, inner, outer in self._keyed:
            i = inner.copy()
            i.update(msg)
            o = outer.copy()
            o.update(i.digest())
            append((o.digest(), value))
        entries.sort()
        blob = b"".join(e[0] for e in entries)
        values = array("I", (e[1] for e in entries))
        self._count += len(values)
        return ts, blob, values

    def update(self, now: float) -> None:
        """Slide the window to ``now`` (either way: the wall clock may step back)."""
        now_s = int(now)
        lo, hi = now_s - self._window, now_s + self._window
        seconds = self._seconds
        if self._lo is None or self._hi is None or lo > self._hi or hi < self._lo:
            seconds.clear()
            self._tainted.clear()
            self._count = 0
            seconds.extend(self._second(ts) for ts in range(lo, hi + 1))
        else:
            for ts in range(self._hi + 1, hi + 1):
                seconds.append(self._second(ts))
            for ts in range(self._lo - 1, lo - 1, -1):
                seconds.appendleft(self._second(ts))
            dropped = False
            while seconds[0][0] < lo:
                self._count -= len(seconds.popleft()[2])
                dropped = True
            while seconds[-1][0] > hi:
                self._count -= len(seconds.pop()[2])
                dropped = True
            if dropped and self._tainted:
                self._tainted = {k: t for k, t in self._tainted.items() if lo <= t <= hi}
        self._lo, self._hi = lo, hi

    def _find(self, key: bytes) -> LegacyMatch | None:
        for ts, blob, values in self._seconds:
            lo, hi = 0, len(values)
            while lo < hi:
                mid = (lo + hi) >> 1
                if blob[mid * 16:mid * 16 + 16] < key:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < len(values) and blob[lo * 16:lo * 16 + 16] == key:
                v = values[lo]
                return LegacyMatch(v >> 16, v & 0xFFFF, ts)
        return None

    def lookup(self, auth: bytes, now: float) -> LegacyMatch | None:
        """The user, ID and timestamp for a 16-byte legacy auth, or None."""
        self.update(now)
        key = bytes(auth)
        if key in self._tainted:
            return None
        return self._find(key)

    def taint(self, auth: bytes) -> None:
        """Refuse this auth value from now on (until its second leaves the window)."""
        key = bytes(auth)
        match = self._find(key)
        if match is not None:
            self._tainted[key] = match.timestamp
            if len(self._tainted) > 100_000:  # bounded: forget the oldest half
                for k in list(self._tainted)[:50_000]:
                    del self._tainted[k]
