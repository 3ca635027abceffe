"""Password checks that take the same time whether or not the user exists."""

from __future__ import annotations

import hmac

#: compared against when the user is unknown, so that case does the same work
_ABSENT = b"\x00" * 32


def _bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)


def password_ok(expected: bytes | str | None, given: bytes | str) -> bool:
    """Whether ``given`` is ``expected`` (None: no such user), compared in constant time:
    neither the user's existence nor a matching prefix shows in the timing."""
    ok = hmac.compare_digest(_bytes(expected) if expected is not None else _ABSENT,
                             _bytes(given))
    return ok and expected is not None
