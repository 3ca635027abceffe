"""The client side of a WebSocket upgrade, built by hand (sans-IO).

:func:`upgrade_request` writes the bytes wsproto's client handshake would send (same header
order and spelling) without its two h11 connections, and :func:`read_upgrade_response` checks
the server's answer strictly: ``HTTP/1.1 101``, ``Upgrade: websocket``, ``Connection``
naming ``upgrade``, the ``Sec-WebSocket-Accept`` of our key, no extension we did not offer,
and a ``Sec-WebSocket-Protocol`` (if any) equal to the one offered (the early data). A
response head laid out unusually (bare LF line ends, folded lines, another HTTP version) is
parsed by h11 instead and judged by the same rules; anything else is a :class:`Refused`.
The answer gorilla (V2Ray) and wsproto give, byte for byte, is accepted on sight.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import h11

from vtwist.transport.ws.http import accept_token

#: The longest response head accepted (h11's default limit for an incomplete event).
MAX_RESPONSE_BYTES = 16 * 1024

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_VALUE = re.compile(rb"[\x20-\x7e\t]*\Z")
_REQUEST_VALUE = re.compile(rb"[\x20-\x7e\t\x80-\xff]*\Z")  # UTF-8 from the config too
_TARGET = re.compile(r"[\x21-\x7e]+\Z")
_STATUS = re.compile(rb"HTTP/1\.1 ([0-9]{3})(?: [\x20-\x7e\t]*)?\Z")
#: The 101 gorilla/websocket (V2Ray) and wsproto (vtwist) send, up to the accept token: an
#: answer that is this, the token, and the head's end (or the echoed subprotocol) is
#: accepted without parsing it.
_PLAIN_101 = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Accept: ")


@dataclass(slots=True)
class Accepted:
    """The server switched to WebSocket; ``leftover`` are the first frame bytes."""

    subprotocol: str | None
    leftover: bytes


@dataclass(slots=True)
class Refused:
    """The upgrade failed: ``status`` is the HTTP status when it was not 101."""

    reason: str
    status: int | None = None


def upgrade_request(target: str, host: str, key: bytes,
                    headers: Sequence[tuple[str, str]] = (),
                    protocol: str | None = None) -> bytes:
    """The GET upgrade request for ``target`` with ``Host: host``, ``key``, the offered
    ``protocol`` (early data) and the configured extra ``headers``.

    Raises ValueError for a target, host or header that cannot go on the wire as it is.
    """
    head, tail = _request_parts(target, host, headers, protocol)
    return head + key + tail


@functools.lru_cache(maxsize=64)
def _request_around_key(target: str, host: str, headers: tuple[tuple[str, str], ...]
                        ) -> tuple[bytes, bytes]:
    return _request_parts(target, host, headers, None)


def request_around_key(target: str, host: str, headers: Sequence[tuple[str, str]] = ()
                       ) -> tuple[bytes, bytes]:
    """The request :func:`upgrade_request` makes without a ``protocol``, before and after
    its key: built once per (target, host, headers), as a client sends the same request
    with a new key for each connection. Raises ValueError as :func:`upgrade_request` does."""
    return _request_around_key(target, host, tuple(headers))


def _request_parts(target: str, host: str, headers: Sequence[tuple[str, str]],
                   protocol: str | None) -> tuple[bytes, bytes]:
    if not _TARGET.match(target):
        raise ValueError(f"path {target!r} is not printable ASCII without spaces")
    try:
        host_bytes = host.encode("ascii") if host.isascii() else host.encode("idna")
    except UnicodeError as e:
        raise ValueError(f"host {host!r} cannot be encoded: {e}") from None
    head = b"".join((b"GET ", target.encode("ascii"), b" HTTP/1.1\r\nHost: ",
                     _value(host_bytes),
                     b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "))
    parts = [b"\r\nSec-WebSocket-Version: 13\r\n"]
    if protocol is not None:
        parts += [b"Sec-WebSocket-Protocol: ", _value(protocol.encode("ascii")), b"\r\n"]
    for name, value in headers:
        raw = name.encode("latin-1", "replace")
        if not _TOKEN.match(raw):
            raise ValueError(f"header name {name!r} is not an HTTP token")
        parts += [raw, b": ", _value(value.encode("utf-8")), b"\r\n"]
    parts.append(b"\r\n")
    return head, b"".join(parts)


def _value(value: bytes) -> bytes:
    if not _REQUEST_VALUE.match(value):
        raise ValueError(f"header value {value[:40]!r} has a control character")
    return value


def read_upgrade_response(buffer: bytes, key: bytes,
                          offered: str | None) -> Accepted | Refused | None:
    """Judge the answer to an upgrade request sent with ``key`` and ``offered``.

    None: ``buffer`` does not hold the whole head yet (and is within the limit).
    """
    if buffer.startswith(_PLAIN_101):  # gorilla's and wsproto's answer, byte for byte
        token = accept_token(key)
        end = len(_PLAIN_101) + len(token)
        if buffer.startswith(token, len(_PLAIN_101)):
            if buffer.startswith(b"\r\n\r\n", end):
                return Accepted(None, buffer[end + 4:])
            if offered is not None:
                echo = b"\r\nSec-WebSocket-Protocol: " + offered.encode("latin-1") + b"\r\n\r\n"
                if buffer.startswith(echo, end):
                    return Accepted(offered, buffer[end + len(echo):])
    end = buffer.find(b"\r\n\r\n")
    if end < 0 or end > MAX_RESPONSE_BYTES:
        line_end = buffer.find(b"\r\n")
        if line_end >= 0:
            match = _STATUS.match(buffer, 0, line_end)
            if match is not None and match[1] != b"101":
                return _refused_status(int(match[1]))
        if len(buffer) > MAX_RESPONSE_BYTES:
            return Refused(f"response header longer than {MAX_RESPONSE_BYTES} bytes")
        if b"\n\n" in buffer or b"\n\r\n" in buffer:
            return _read_with_h11(buffer, key, offered)
        return None
    lines = buffer[:end].split(b"\r\n")
    match = _STATUS.match(lines[0])
    if match is None:
        return _read_with_h11(buffer, key, offered)
    if match[1] != b"101":
        return _refused_status(int(match[1]))
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name) or not _VALUE.match(value):
            return _read_with_h11(buffer, key, offered)
        headers.append((name.lower(), value.strip(b" \t")))
    return _judge(headers, key, offered, buffer[end + 4:])


def _refused_status(status: int) -> Refused:
    return Refused(f"server answered HTTP {status}", status)


def _read_with_h11(buffer: bytes, key: bytes, offered: str | None) -> Accepted | Refused | None:
    """An unusually laid out head: h11 reads it (as wsproto's handshake would)."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE_BYTES)
    conn.send(h11.Request(method="GET", target="/", headers=[
        ("Host", "h"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]))
    conn.receive_data(buffer)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as e:
        return Refused(f"bad HTTP response: {e}")
    if event is h11.NEED_DATA:
        return None
    if not isinstance(event, (h11.InformationalResponse, h11.Response)):
        return Refused("bad HTTP response")
    if event.status_code != 101:
        return _refused_status(event.status_code)
    headers = [(name, value.strip(b" \t")) for name, value in event.headers]
    return _judge(headers, key, offered, conn.trailing_data[0])


_ONCE = (b"upgrade", b"sec-websocket-accept", b"sec-websocket-protocol")


def _judge(headers: list[tuple[bytes, bytes]], key: bytes, offered: str | None,
           leftover: bytes) -> Accepted | Refused:
    """The rules of a 101 (names lower-case, values stripped)."""
    seen: dict[bytes, bytes] = {}
    connection_upgrade = False
    for name, value in headers:
        if name == b"connection":
            if any(t.strip(b" \t").lower() == b"upgrade" for t in value.split(b",")):
                connection_upgrade = True
        elif name in _ONCE:
            if name in seen:
                return Refused(f"more than one {name.decode()} header")
            seen[name] = value
        elif name == b"sec-websocket-extensions" and value.strip(b", \t"):
            return Refused(f"extensions accepted that were not offered: {value[:40]!r}")
    if not connection_upgrade:
        return Refused("missing header 'Connection: Upgrade'")
    if seen.get(b"upgrade", b"").lower() != b"websocket":
        return Refused("missing header 'Upgrade: websocket'")
    if seen.get(b"sec-websocket-accept") != accept_token(key):
        return Refused("bad Sec-WebSocket-Accept")
    protocol = seen.get(b"sec-websocket-protocol")
    if protocol is None:
        return Accepted(None, leftover)
    chosen = protocol.decode("latin-1")
    if chosen != offered:
        return Refused(f"subprotocol {chosen[:40]!r} was not offered")
    return Accepted(chosen, leftover)
