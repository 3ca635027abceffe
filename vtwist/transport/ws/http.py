"""The HTTP side of a WebSocket upgrade, like Go's net/http and gorilla (sans-IO).

Error responses (Date, Content-Length, Go's body and headers), the Sec-WebSocket-Key check,
and the client's Host header.
"""

from __future__ import annotations

import base64
import binascii
import email.utils

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
