"""Replay filters that several worker processes share through one memory mapping (sans-IO).

With ``--workers N`` (:mod:`vtwist.app.workers`) a replayed VMess header or Shadowsocks salt
may reach another worker than the original, so the per-process filters of
:mod:`vtwist.proxy.vmess.replay` and :mod:`vtwist.proxy.shadowsocks.replay` are not enough.
A :class:`SharedTable` keeps 16-byte fingerprints (keyed BLAKE2b of the value, the key being
random per supervisor) in two generations of an open-addressing hash table laid out in a
buffer that every worker maps (a ``memfd`` created by the supervisor before the workers
start). Like V2Ray's ``antireplay`` filter the generations rotate: with a ``period`` the
current one becomes the previous one every ``period`` seconds (a value is remembered for at
least ``period`` and at most ``2 * period`` seconds); without, when it holds ``capacity``
values (Shadowsocks salts, as :class:`~vtwist.proxy.shadowsocks.replay.SaltFilter`).

Exactness: a value is refused only if its 128-bit fingerprint was seen, so a false refusal
needs a BLAKE2b collision (about 2**-128 per pair; V2Ray's cuckoo filters refuse about one
valid connection in 2000). Each check-and-add runs under the caller's lock (the workers use a
POSIX record lock on the mapping), so two identical values that arrive at two workers at the
same instant cannot both pass: there is no race window. A full generation in ``period`` mode
refuses new values (fails closed, as :class:`~vtwist.proxy.vmess.replay.AuthIDFilter`).

Time is a parameter; this module does no I/O. :data:`TABLES` names the tables a worker
installs (:func:`install`); the server factories ask :func:`shared` for theirs.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

FINGERPRINT = 16
HEADER = 64  # start time (f64), current generation (u32), pad, counts (2 x u32), key (16)
_HEAD = struct.Struct("<dII II")
_ZERO = bytes(FINGERPRINT)
#: probes before a generation counts as full for one value (never reached below 3/4 load)
MAX_PROBES = 4096


@dataclass(frozen=True)
class TableSpec:
    """One shared table: its name, slots per generation (a power of two) and rotation."""

    name: str
    slots: int
    period: float | None = None  # seconds per generation; None: rotate when full
    capacity: int = 0  # values per generation (0: three quarters of the slots)

    @property
    def size(self) -> int:
        """Bytes this table takes in the mapping."""
        return HEADER + 2 * self.slots * FINGERPRINT

    @property
    def limit(self) -> int:
        """Values one generation holds."""
        return self.capacity or self.slots * 3 // 4


#: the tables of a worker set: VMess AEAD auth IDs (valid for +-120 s: remembered >= 240 s),
#: VMess legacy sessions (V2Ray's 180 s session history), Shadowsocks stream and packet salts.
#: Auth IDs: 2**18 slots, 4 MiB per generation, 196,608 handshakes per 240 s (819/s; V2Ray
#: 4.34's antireplay holds 100,000 per 120 s, 833/s). Only the pages a table touches are
#: resident, once for all workers (though each worker's RSS shows the pages it touched).
TABLES: tuple[TableSpec, ...] = (
    TableSpec("vmess-auth-id", 1 << 18, period=240.0),
    TableSpec("vmess-session", 1 << 16, period=180.0),
    TableSpec("ss-salt", 1 << 17, capacity=65536),
    TableSpec("ss-packet-salt", 1 << 17, capacity=65536),
)


def mapping_size(specs: tuple[TableSpec, ...] = TABLES) -> int:
    """Bytes the shared mapping needs for ``specs``."""
    return sum(s.size for s in specs)


class SharedTable:
    """Check-and-add of values in a two-generation table at ``buffer[offset:]``."""

    def __init__(self, buffer: Any, offset: int, spec: TableSpec,
                 lock: Callable[[], AbstractContextManager[Any]] = nullcontext) -> None:
        self.spec = spec
        self._view = memoryview(buffer)[offset:offset + spec.size]
        self._lock = lock
        self._mask = spec.slots - 1
        self._key: Any = None
        self._bases = (HEADER, HEADER + spec.slots * FINGERPRINT)
        if spec.slots & self._mask:
            raise ValueError("slots must be a power of two")

    def initialize(self, key: bytes, now: float) -> None:
        """Zero the table and set its fingerprint key (the supervisor, once)."""
        self._view[:] = bytes(len(self._view))
        _HEAD.pack_into(self._view, 0, now, 0, 0, 0, 0)
        self._view[32:32 + len(key[:16])] = key[:16]
        self._key = None

    def release(self) -> None:
        """Let go of the buffer (so a mapping can be closed)."""
        self._view.release()

    def _fingerprint(self, value: bytes) -> bytes:
        if self._key is None:  # set once by the supervisor before any worker starts
            self._key = hashlib.blake2b(digest_size=FINGERPRINT, key=bytes(self._view[32:48]))
        h = self._key.copy()
        h.update(value)
        fp = h.digest()
        return fp if fp != _ZERO else b"\x01" + fp[1:]

    def _generation(self, index: int) -> int:
        return self._bases[index]

    def _clear(self, index: int) -> None:
        start = self._generation(index)
        self._view[start:start + self.spec.slots * FINGERPRINT] = bytes(
            self.spec.slots * FINGERPRINT)

    def _rotate(self, now: float) -> tuple[int, int]:
        """Rotate if due; the current generation and its count."""
        start, current, _, c0, c1 = _HEAD.unpack_from(self._view, 0)
        counts = [c0, c1]
        period = self.spec.period
        if (now - start < period) if period is not None else counts[current] < self.spec.limit:
            return current, counts[current]  # the common case: nothing to rotate
        if period is not None and now - start >= period:
            stale = now - start >= 2 * period
            if stale:  # nothing in either generation is recent enough to keep
                self._clear(current)
                counts[current] = 0
            current ^= 1
            self._clear(current)
            counts[current] = 0
            start = now if stale else start + period * ((now - start) // period)
        elif period is None and counts[current] >= self.spec.limit:
            current ^= 1
            self._clear(current)
            counts[current] = 0
        _HEAD.pack_into(self._view, 0, start, current, 0, counts[0], counts[1])
        return current, counts[current]

    def _find(self, generation: int, fp: bytes) -> tuple[bool, int]:
        """(found, the empty slot's offset or -1) for ``fp`` in ``generation``."""
        view = self._view
        base = self._bases[generation]
        slot = int.from_bytes(fp[:8], "little") & self._mask
        for _ in range(min(MAX_PROBES, self.spec.slots)):
            at = base + slot * FINGERPRINT
            held = view[at:at + FINGERPRINT]
            if held == _ZERO:
                return False, at
            if held == fp:
                return True, -1
            slot = (slot + 1) & self._mask
        return False, -1

    def check_and_add(self, value: bytes, now: float) -> bool:
        """True if ``value`` is new (and remember it); False for a replay or a full table."""
        fp = self._fingerprint(value)
        with self._lock():
            current, count = self._rotate(now)
            found, empty = self._find(current, fp)
            if found or self._find(current ^ 1, fp)[0]:
                return False
            if empty < 0 or count >= self.spec.limit:
                return False  # fail closed
            self._view[empty:empty + FINGERPRINT] = fp
            field = 12 + 4 * (current + 1)
            struct.pack_into("<I", self._view, field, count + 1)
            return True

    def __len__(self) -> int:
        _, _, _, c0, c1 = _HEAD.unpack_from(self._view, 0)
        return int(c0 + c1)


def layout(buffer: Any, lock: Callable[[], AbstractContextManager[Any]] = nullcontext,
           specs: tuple[TableSpec, ...] = TABLES) -> dict[str, SharedTable]:
    """The tables of ``specs`` laid out one after the other in ``buffer``."""
    tables: dict[str, SharedTable] = {}
    offset = 0
    for spec in specs:
        tables[spec.name] = SharedTable(buffer, offset, spec, lock)
        offset += spec.size
    return tables


# -- the process's tables (set by a worker; empty in a single process) -----------------------
_installed: dict[str, SharedTable] = {}


def install(tables: dict[str, SharedTable]) -> None:
    """Make ``tables`` the filters every server factory built from now on uses."""
    _installed.clear()
    _installed.update(tables)


def shared(name: str) -> SharedTable | None:
    """The shared table ``name`` in a worker process; None in a single process."""
    return _installed.get(name)


class SharedAuthIDFilter:
    """:class:`~vtwist.proxy.vmess.replay.AuthIDFilter`'s interface on a shared table."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def check_and_add(self, auth_id: bytes, timestamp: int, now: float) -> bool:
        """True if ``auth_id`` is new to every worker (and remember it)."""
        return self.table.check_and_add(bytes(auth_id), now)


class SharedSessionHistory:
    """:class:`~vtwist.proxy.vmess.replay.SessionHistory`'s interface on a shared table."""

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def check_and_add(self, session: Any, now: float) -> bool:
        """True if the (user, key, IV) ``session`` is new to every worker."""
        value = b"".join(bytes(p) for p in session) if isinstance(session, tuple) \
            else repr(session).encode()
        return self.table.check_and_add(value, now)


class SharedSaltFilter:
    """:class:`~vtwist.proxy.shadowsocks.replay.SaltFilter`'s interface on a shared table.

    Salt rotation is by count, so the clock passed in does not matter (``now`` is kept for
    the table's interface).
    """

    def __init__(self, table: SharedTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def check(self, salt: bytes) -> bool:
        """True (and remembered by every worker) for a salt not seen recently."""
        return self.table.check_and_add(bytes(salt), 0.0)
