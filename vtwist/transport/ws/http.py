"""The HTTP side of a WebSocket upgrade, like Go's net/http and gorilla (sans-IO).

Error responses (Date, Content-Length, Go's body and headers), the Sec-WebSocket-Key check,
the client's Host header, and the server's fast path for a plain upgrade request
(:func:`plain_upgrade`, :func:`accept_response`).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
from binascii import b2a_base64
from hashlib import sha1

from wsproto.utilities import split_comma_header

_REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


def http_response(status: int, headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
                  body: bytes = b"") -> bytes:
    """An HTTP/1.1 response as Go's server would write it (Date, Content-Length)."""
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}"]
    if body:
        lines.append("Content-Type: text/plain; charset=utf-8")
    lines.extend(f"{k}: {v}" for k, v in headers)
    if body:
        lines.append("X-Content-Type-Options: nosniff")
    lines.append("Date: " + email.utils.formatdate(usegmt=True))
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def bad_request(extra: list[tuple[str, str]] = ()) -> bytes:  # type: ignore[assignment]
    """gorilla's 400 answer to a request that is not a valid upgrade."""
    return http_response(400, [("Sec-Websocket-Version", "13"), *extra], b"Bad Request\n")


def valid_key(key: bytes) -> bool:
    """True when ``Sec-WebSocket-Key`` is base64 of 16 bytes."""
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def host_header(host: str, port: int, secure: bool) -> str:
    """Host[:port], leaving out the scheme's default port (as gorilla does)."""
    shown = f"[{host}]" if ":" in host else host
    if (port == 443 and secure) or (port == 80 and not secure):
        return shown
    return f"{shown}:{port}"


def encode_early_data(data: bytes) -> str:
    """Early data as the peers send it: base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_early_data(text: bytes) -> bytes | None:
    """Early data from a header or path: base64url, padded or not (Xray also takes the
    standard alphabet); None when ``text`` is not base64 or decodes to nothing."""
    text = text.strip().replace(b"+", b"-").replace(b"/", b"_").rstrip(b"=")
    if not text or len(text) % 4 == 1:
        return None
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        return None
    return data or None


_PRINTABLE = re.compile(rb"[\x20-\x7e]*\Z")
_SINGLE = (b"connection", b"host", b"sec-websocket-key", b"sec-websocket-version", b"upgrade")


def plain_upgrade(target: bytes, headers: list[tuple[bytes, bytes]]) -> list[str] | None:
    """The offered subprotocols (as wsproto lists them) of an upgrade request that wsproto's
    server handshake would accept without a question, or None to let wsproto judge it.

    Plain means: a printable-ASCII target and header values; Connection, Host,
    Sec-WebSocket-Key, -Version and Upgrade once each; Connection naming ``upgrade``,
    version 13, ``Upgrade: websocket``, an IDNA-decodable Host; no extensions offered and at
    most one Sec-WebSocket-Protocol. (The method is checked by the caller.) Such a request
    is answered by :func:`accept_response` with the bytes wsproto would send, at a tenth of
    its cost (wsproto re-parses the request through a second h11 connection and builds its
    answer with a third).
    """
    if not target.isascii():
        return None
    seen: dict[bytes, bytes] = {}
    protocols: bytes | None = None
    for name, value in headers:
        if not _PRINTABLE.match(value):
            return None
        name = name.lower()
        if name in _SINGLE:
            if name in seen:
                return None
            seen[name] = value
        elif name == b"sec-websocket-protocol":
            if protocols is not None:
                return None
            protocols = value
        elif name == b"sec-websocket-extensions":
            return None
    if len(seen) != len(_SINGLE) or seen[b"sec-websocket-version"] != b"13" \
            or seen[b"upgrade"].lower() != b"websocket":
        return None
    # (split_comma_header's test, on bytes: the values are printable ASCII here)
    if not any(t.strip().lower() == b"upgrade" for t in seen[b"connection"].split(b",")):
        return None
    try:
        seen[b"host"].decode("idna")
    except UnicodeError:
        return None
    return split_comma_header(protocols) if protocols is not None else []


#: A request head as clients lay it out: ``GET``, a printable target, ``HTTP/1.1``, header
#: lines of a token, a colon and printable ASCII (no tab, no folding), then the empty line.
_USUAL_HEAD = re.compile(rb"GET ([\x21-\x7e]+) HTTP/1\.1\r\n"
                         rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\x20-\x7e]*\r\n)+)\r\n")
#: One line of such a head: the name, and the value without the spaces around it.
_USUAL_FIELD = re.compile(rb"([^:]+):[ ]*([^\r]*?)[ ]*\r\n")

UsualRequest = tuple[bytes, dict[bytes, bytes], bytes]


def usual_upgrade(buffer: bytes) -> UsualRequest | None:
    """(target, {lower-case name: value}, the bytes after the head) of the upgrade request
    most clients send, in one pass; None leaves ``buffer`` to the full path
    (:func:`read_request_head`, :func:`plain_upgrade`, h11 and wsproto).

    Usual means: laid out as ``_USUAL_HEAD`` says, every header once, ``Host``,
    ``Connection`` naming ``upgrade``, ``Upgrade: websocket``, ``Sec-WebSocket-Version: 13``
    and a ``Sec-WebSocket-Key``, no extensions offered and no body. Such a request is one
    :func:`read_request_head` reads directly and :func:`plain_upgrade` calls plain, so its
    answer is the one the full path gives; anything else (an incomplete head too) takes that
    path.
    """
    match = _USUAL_HEAD.match(buffer)
    if match is None:
        return None
    pairs = _USUAL_FIELD.findall(match[2])
    fields = {name.lower(): value for name, value in pairs}
    if len(fields) != len(pairs) or fields.get(b"sec-websocket-version") != b"13" \
            or b"sec-websocket-key" not in fields or b"sec-websocket-extensions" in fields \
            or b"content-length" in fields or b"transfer-encoding" in fields:
        return None
    upgrade = fields.get(b"upgrade")
    connection = fields.get(b"connection")
    host = fields.get(b"host")
    if upgrade is None or upgrade.lower() != b"websocket" or connection is None \
            or host is None:
        return None
    if connection.lower() != b"upgrade" and not any(
            t.strip().lower() == b"upgrade" for t in connection.split(b",")):
        return None
    if b"xn--" in host:  # (an ASCII name without it always decodes)
        try:
            host.decode("idna")
        except UnicodeError:
            return None
    return match[1], fields, buffer[match.end():]


#: RFC 6455's GUID, appended to the key for the accept token.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_token(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for ``key`` (wsproto's ``generate_accept_token``, inline)."""
    return b2a_base64(sha1(key + _GUID).digest(), newline=False)


def accept_response(key: bytes, subprotocol: str | None) -> bytes:
    """The 101 answer wsproto's server sends for ``key`` (echoing ``subprotocol``)."""
    head = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_token(key))
    if subprotocol is not None:
        return head + b"\r\nSec-WebSocket-Protocol: " + subprotocol.encode("ascii") \
            + b"\r\n\r\n"
    return head + b"\r\n\r\n"


_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
#: Header lines, each ``name:value`` and CRLF: a token, then printable ASCII and tabs.
_HEADER_LINES = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[\x20-\x7e\t]*\r\n)*\Z")
#: Headers that make h11 judge the request (a body, or a Host it must check).
_H11_ONLY = (b"content-length", b"transfer-encoding")

RequestHead = tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes]


def read_request_head(buffer: bytes) -> RequestHead | bool | None:
    """A plainly laid out ``HTTP/1.1`` request head: (method, target, headers with lower-case
    names and stripped values, the bytes after the head), as h11 would give them.

    None: the head is not complete yet (only CRLF line ends looked for). False: the head is
    laid out unusually (bare LF, folded lines, another version, no or several Host headers, a
    body) -- h11 must read it, and refuse it where it is invalid.
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return False if b"\n\n" in buffer or b"\n\r\n" in buffer else None
    line_end = buffer.find(b"\r\n")
    parts = buffer[:line_end].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not _TOKEN.match(parts[0]) \
            or not _TARGET.match(parts[1]):
        return False
    block = buffer[line_end + 2:end + 2]  # the header lines, each with its CRLF
    if not _HEADER_LINES.match(block):  # every line's name and value in one pass
        return False
    headers = []
    hosts = 0
    for line in block.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"host":
            hosts += 1
        elif name in _H11_ONLY:
            return False
        headers.append((name, value.strip(b" \t")))
    if hosts != 1:
        return False
    return parts[0], parts[1], headers, buffer[end + 4:]
