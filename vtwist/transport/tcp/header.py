"""The HTTP header disguise's bytes (sans-IO): building and reading the header blocks.

The client puts a request header (one value picked at random from each configured list)
in front of its first write; the server checks the request's path and puts a response
header in front of its first write, or answers an error response.
"""

from __future__ import annotations

import email.utils
import random
from urllib.parse import unquote, urlsplit

from vtwist.transport.tcp.settings import Headers, HTTPRequestConfig

#: The longest header block either side reads.
MAX_HEADER_BYTES = 8192

_ERROR_HEADERS: Headers = [("Connection", ["close"]), ("Cache-Control", ["private"]),
                           ("Content-Length", ["0"])]


def _pick(values: list[str]) -> str:
    return random.choice(values) if values else ""


def request_header(config: HTTPRequestConfig) -> bytes:
    """A request header with one value picked from each list."""
    lines = [f"{config.method} {_pick(config.paths)} HTTP/{config.version}"]
    lines.extend(f"{name}: {_pick(values)}" for name, values in config.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def response_header(version: str, status: str, reason: str, headers: Headers) -> bytes:
    """A response header; a Date header is added unless configured."""
    lines = [f"HTTP/{version} {status} {reason}"]
    lines.extend(f"{name}: {_pick(values)}" for name, values in headers)
    if not any(name.lower() == "date" for name, _ in headers):
        lines.append("Date: " + email.utils.formatdate(usegmt=True))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def error_response(status: str, reason: str) -> bytes:
    """The response a server sends instead of the configured one (400, 404)."""
    return response_header("1.1", status, reason, _ERROR_HEADERS)


def request_path(header: bytes) -> str | None:
    """The path of a request header block (query dropped, %-decoded), or None if malformed."""
    text = header.decode("latin-1")
    first, _, rest = text.partition("\r\n")
    parts = first.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[0]:
        return None
    for line in rest.split("\r\n"):
        if line and ":" not in line:
            return None
    target = parts[1]
    if "://" in target:
        try:
            path = urlsplit(target).path
        except ValueError:  # e.g. an unclosed "[": not a request this header matches
            return None
    else:
        path = target.split("?", 1)[0].split("#", 1)[0]
    return unquote(path)
