"""The HTTP/1 sniffer: a request line with a known method, then the ``Host`` header."""

from __future__ import annotations

from vtwist.address import is_valid_domain, normalize_host, parse_ip
from vtwist.sansio import NEED_DATA, NeedData

METHODS = (b"get", b"post", b"head", b"put", b"delete", b"options", b"connect", b"patch",
           b"trace")
#: Header bytes looked at; a request head longer than this is not sniffed.
MAX_HEAD = 8192


def _starts_with_method(data: bytes) -> bool | None:
    """True, False, or None while too short to tell."""
    lowered = data[:8].lower()
    short = False
    for method in METHODS:
        if len(lowered) < len(method) + 1:
            if method.startswith(lowered):
                short = True
            continue
        if lowered.startswith(method + b" "):
            return True
    return None if short else False


def host_of(value: str) -> str | None:
    """The host part of a ``Host`` header value (port dropped, IPv6 brackets removed)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else None
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        value = host
    return value or None


def sniff_http(data: bytes) -> tuple[str, str] | NeedData | None:
    """``("http1", host)`` for an HTTP/1 request naming a domain host, NEED_DATA while the
    head is incomplete, None otherwise."""
    starts = _starts_with_method(data)
    if starts is None:
        return NEED_DATA
    if not starts:
        return None
    end = data.find(b"\r\n\r\n")
    lines = (data if end < 0 else data[:end]).split(b"\n")[1:]
    if end < 0:
        lines = lines[:-1]  # the last line may still be growing
    for line in lines:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"host":
            host = host_of(value.decode("latin-1"))
            if host is None:
                return None
            if parse_ip(host) is not None:
                return ("http1", normalize_host(host))
            return ("http1", host) if is_valid_domain(host) else None
    if end < 0 and len(data) < MAX_HEAD:
        return NEED_DATA
    return None
