"""Which fallback a connection goes to, as V2Ray 4.34 chooses (sans-IO).

Fallbacks form a table ALPN -> path -> fallback (a later entry replaces an earlier one with
the same ALPN and path); paths of the ALPN-less entries are inherited by every other ALPN that
lacks them. The TLS ALPN picks a row (an unknown one the ``""`` row) when there is more than
the ``""`` row; then, when the row has more than the ``""`` path, the HTTP/1 request line in
the first bytes picks the path (the first ``/`` at offsets 4..8 after a space, up to the
next space within the first 64 bytes; an HTTP/2 preface, ``PRI *``, has none).
"""

from __future__ import annotations

from collections.abc import Sequence

from vtwist.proxy.fallback.settings import Fallback

#: A first read shorter than this goes to a fallback at once (4.34: ``firstLen < 18``).
MIN_REQUEST = 18
#: 4.34 reads the first bytes into one buffer of this size (``buf.Size``).
FIRST_READ = 2048

Table = dict[str, dict[str, Fallback]]


def fallback_table(fallbacks: Sequence[Fallback]) -> Table:
    """The ALPN -> path -> fallback table 4.34 builds from the config."""
    table: Table = {}
    for fb in fallbacks:
        table.setdefault(fb.alpn, {})[fb.path] = fb
    default = table.get("")
    if default is not None:
        for alpn, row in table.items():
            if alpn:
                for path, fb in default.items():
                    row.setdefault(path, fb)
    return table


def request_path(first: bytes) -> str | None:
    """The path of the HTTP/1 request line at the start of ``first``, as 4.34 finds it."""
    first = first[:FIRST_READ]
    if len(first) < MIN_REQUEST or first[4:5] == b"*":
        return None
    for i in range(4, 9):
        if first[i:i + 1] == b"/" and first[i - 1:i] == b" ":
            for j in range(i + 1, min(len(first), 64)):
                k = first[j]
                if k in (0x0D, 0x0A):
                    return None
                if k == 0x20:
                    return first[i:j].decode("latin-1")
            return None
    return None


def choose_in(table: Table, alpn: str | None, first_bytes: bytes) -> Fallback | None:
    """The fallback for a connection (``alpn``: the negotiated TLS ALPN, None without TLS)."""
    if not table:
        return None
    key = ""
    if len(table) > 1 or "" not in table:
        key = alpn or ""
        if key not in table:
            key = ""
    row = table.get(key)
    if row is None:
        return None
    path = ""
    if len(row) > 1 or "" not in row:
        found = request_path(first_bytes)
        if found is not None and found in row:
            path = found
    return row.get(path)


def choose_fallback(fallbacks: Sequence[Fallback], alpn: str | None,
                    first_bytes: bytes) -> Fallback | None:
    """The fallback 4.34 would pick for ``first_bytes`` (the first read of the connection)
    arriving with TLS ALPN ``alpn``; None when no entry matches (4.34 then closes)."""
    return choose_in(fallback_table(fallbacks), alpn, first_bytes)
