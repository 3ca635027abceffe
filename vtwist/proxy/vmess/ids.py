"""VMess identities: UUID parsing, cmdKey and the legacy alter-ID chain."""

from __future__ import annotations

import hashlib
import uuid as _uuid

_CMD_KEY_SALT = b"c48619fe-8f02-49e0-b9e9-edf763e17e21"
_ALTER_SALT = b"16167dc8-16b6-4e6d-b8bb-65dd68113a81"
_ALTER_RETRY = b"533eff8a-4113-4b10-b5ce-0f5d76b98cd2"


def parse_uuid(text: str) -> bytes:
    """The 16 raw bytes of a textual UUID (dashes optional), as V2Ray 4.34 accepts it.

    Raises ValueError for anything that is not 32 hex digits once dashes are removed.
    """
    if not isinstance(text, str):
        raise ValueError("UUID must be a string")
    hexdigits = text.replace("-", "")
    if len(hexdigits) != 32:
        raise ValueError(f"invalid UUID {text!r}")
    try:
        return bytes.fromhex(hexdigits)
    except ValueError:
        raise ValueError(f"invalid UUID {text!r}") from None


def format_uuid(raw: bytes) -> str:
    """The canonical dashed text of 16 UUID bytes."""
    return str(_uuid.UUID(bytes=bytes(raw)))


def log_uuid(raw: bytes) -> str:
    """A user's UUID as log lines show it: its first 8 hex digits only (the UUID is the
    user's secret; the prefix tells users apart without revealing it)."""
    return bytes(raw[:4]).hex() + "..."


def cmd_key(uuid_bytes: bytes) -> bytes:
    """cmdKey = MD5(uuid || fixed salt)."""
    return hashlib.md5(uuid_bytes + _CMD_KEY_SALT).digest()


def next_alter_id(u: bytes) -> bytes:
    """The alter ID following ``u`` in V2Ray's chain."""
    h = hashlib.md5(u + _ALTER_SALT)
    while True:
        n = h.digest()
        if n != u:
            return n
        h.update(_ALTER_RETRY)


def alter_ids(uuid_bytes: bytes, count: int) -> list[bytes]:
    """The ``count`` alter IDs derived from the main ID (alter[1] .. alter[count])."""
    out: list[bytes] = []
    cur = uuid_bytes
    for _ in range(count):
        cur = next_alter_id(cur)
        out.append(cur)
    return out
