"""The URL shape the query-string links share: ``scheme://userinfo@host:port/?query#name``.

:func:`split_url` cuts a link body into its parts (percent-decoding the query and the name,
leaving the userinfo as written, since each scheme decodes its own); :func:`join_url` builds
one. Errors are :class:`LinkError` naming ``address`` or ``port``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlencode

from vtwist.share import fields
from vtwist.share.errors import LinkError


@dataclass(frozen=True)
class URLParts:
    """A link body cut into its parts: the raw ``userinfo``, the host and port as text,
    the query (last value of each key wins) and the decoded fragment."""

    userinfo: str
    host: str
    port: str
    query: dict[str, str]
    name: str
    has_userinfo: bool


def split_url(body: str, address_key: str = "address") -> URLParts:
    """The parts of ``userinfo@host:port[/][?query][#name]`` (everything after ``://``)."""
    rest, _, fragment = body.partition("#")
    rest, _, query_text = rest.partition("?")
    userinfo, at, hostport = rest.rpartition("@")
    hostport = hostport.rstrip("/")
    host, port = split_host_port(hostport, address_key)
    return URLParts(userinfo, host, port, parse_query(query_text), unquote(fragment), bool(at))


def parse_query(text: str) -> dict[str, str]:
    """A query string's items, percent-decoded (the last of a repeated key wins)."""
    return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}


def split_host_port(hostport: str, address_key: str = "address") -> tuple[str, str]:
    """``host:port`` or ``[v6]:port`` -> (host, port text); the port may be empty."""
    if hostport.startswith("["):
        host, sep, port_text = hostport[1:].partition("]")
        if not sep or (port_text and not port_text.startswith(":")):
            raise LinkError(address_key, f"malformed [IPv6] address in {hostport!r}")
        return unquote(host), port_text[1:]
    if ":" not in hostport:
        return unquote(hostport), ""
    host, _, port_text = hostport.rpartition(":")
    return unquote(host), port_text


def server(parts: URLParts, address_key: str = "address") -> tuple[str, int]:
    """The validated (address, port) of ``parts``."""
    address = fields.address(parts.host, address_key)
    port = fields.integer({"port": parts.port}, "port", 1, 65535, True, "port")
    return address, port


def join_url(scheme: str, userinfo: str, address: str, port: int,
             query: dict[str, str] | None = None, name: str = "", slash: bool = False) -> str:
    """``scheme://userinfo@host:port[/]?query#name`` (``userinfo`` already encoded)."""
    host = f"[{address}]" if ":" in address else address
    url = f"{scheme}://{userinfo}@{host}:{port}"
    if query:
        url += ("/" if slash else "") + "?" + urlencode(query, quote_via=quote)
    if name:
        url += "#" + quote(name, safe="")
    return url


def quote_component(text: str) -> str:
    """``text`` percent-encoded like ``encodeURIComponent`` (for a userinfo part)."""
    return quote(text, safe="")


def link_body(text: str, scheme: str, shape: str) -> str:
    """What follows ``scheme://`` in ``text``; LinkError (``scheme``/``body``) otherwise.

    ``shape`` shows the expected form in the message for an empty body.
    """
    if not isinstance(text, str):
        raise LinkError("link", f"expected text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise LinkError("link", "is empty")
    found, sep, body = stripped.partition("://")
    if not sep:
        raise LinkError("scheme", f"expected a link starting with {scheme}://")
    if found.lower() != scheme:
        raise LinkError("scheme", f"expected {scheme}://, got {found}://")
    if not body:
        raise LinkError("body", f"nothing after {scheme}:// (expected {shape})")
    return body
