"""Readers for a link's fields (and an outbound's keys): each raises :class:`LinkError`
naming the field."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import uuid as uuid_module
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from vtwist.share.errors import LinkError, UnsupportedLinkError
from vtwist.transport import linkfields, registry
from vtwist.transport.linkfields import LinkFieldError, LinkFields, join_list, split_list

SECURITIES = ("auto", "aes-128-gcm", "chacha20-poly1305", "none", "zero")
#: Link securities other clients know and V2Ray 4.34 (so vtwist) does not.
FOREIGN_TLS = ("xtls", "reality")

T = TypeVar("T")

__all__ = ["SECURITIES", "join_list", "split_list"]


def as_link_error(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` with its LinkFieldErrors raised as LinkErrors."""
    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except LinkError:
            raise
        except LinkFieldError as e:
            raise LinkError(e.field, e.message) from None

    return wrapper


obj = as_link_error(linkfields.obj)
text = as_link_error(linkfields.text)
string_list = as_link_error(linkfields.string_list)
drop_extra = linkfields.drop_extra


def first(value: Any, path: str, warn: Callable[[str], None], what: str,
          scheme: str) -> dict[str, Any]:
    """The first object of a non-empty array (``what``: plural noun), warning when a
    ``scheme`` link has to drop the others."""
    if not isinstance(value, list) or not value:
        raise LinkError(path, f"expected a non-empty array of {what}")
    if len(value) > 1:
        warn(f"{path}: a {scheme} link holds one {what[:-1]}; using the first of {len(value)}")
    return obj(value[0], f"{path}[0]")


def level(data: dict[str, Any], path: str, warn: Callable[[str], None], scheme: str) -> None:
    """Warn when a user's ``level`` (or ``email``) must be dropped: links carry neither."""
    value = integer(data, "level", 0, 2**32 - 1, False, "level")
    if value:
        warn(f"{path}.level {value} cannot be carried by a {scheme} link; dropped")
    if data.get("email"):
        warn(f"{path}.email cannot be carried by a {scheme} link; dropped")


def outbound_extras(outbound: dict[str, Any], warn: Callable[[str], None],
                    scheme: str) -> None:
    """Warn about the outbound-level settings no link carries (mux, proxySettings ...)."""
    if obj(outbound.get("mux"), "mux").get("enabled"):
        warn(f"mux cannot be carried by a {scheme} link; dropped")
    for extra in ("proxySettings", "sendThrough"):
        if extra in outbound:
            warn(f"{extra} cannot be carried by a {scheme} link; dropped")


def integer(data: dict[str, Any], key: str, lo: int, hi: int, required: bool,
            what: str, default: int = 0) -> int:
    """``data[key]`` as an integer in ``lo..hi`` (numeric text accepted)."""
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise LinkError(key, f"is missing (the {what})")
        return default
    if isinstance(value, bool):
        raise LinkError(key, f"expected a number {lo}-{hi}, got {json.dumps(value)}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise LinkError(key, f"expected a number {lo}-{hi}, got {value!r}") from None
    if not isinstance(value, int):
        raise LinkError(key, f"expected a number {lo}-{hi}, got {json.dumps(value)}")
    if not lo <= value <= hi:
        raise LinkError(key, f"{what} out of range {lo}-{hi}: {value}")
    return value


def boolean(value: Any, key: str) -> bool:
    """A link's loose boolean (``1``, ``"true"``, ``false`` ...)."""
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "0", "false"):
        return value.strip().lower() in ("1", "true")
    raise LinkError(key, f"expected true or false, got {json.dumps(value)}")


def user_id(value: str, key: str) -> str:
    """A UUID in its canonical form."""
    if not value:
        raise LinkError(key, "is missing (the user id, a UUID)")
    try:
        parsed = uuid_module.UUID(value)
    except ValueError:
        raise LinkError(key, f"not a valid UUID: {value!r}") from None
    if len(value.replace("-", "")) != 32 or value.startswith(("{", "urn:")):
        raise LinkError(key, f"not a valid UUID: {value!r}")
    return str(parsed)


def network(value: str, key: str) -> str:
    """The canonical network name (supported or not) for a link's ``net``."""
    name = value.lower() or "tcp"
    known = registry.lookup(name) or registry.unsupported(name)
    if known is None:
        expected = registry.link_names() + registry.unsupported_link_names()
        raise LinkError(key, f"unknown transport {value!r} (expected one of "
                             f"{', '.join(expected)})")
    return known.name


def network_fields(net: str) -> LinkFields | None:
    """What ``type``/``host``/``path`` mean for ``net``; None if links cannot use it."""
    entry = registry.lookup(net)
    return entry.link_fields if entry is not None else None


def security(value: str, key: str) -> str:
    """The VMess security."""
    scy = value.lower() or "auto"
    if scy not in SECURITIES:
        raise LinkError(key, f"unknown VMess security {value!r} (expected one of "
                             f"{', '.join(SECURITIES)})")
    return scy


def tls(value: str, key: str) -> str:
    """``"tls"`` or ``""``."""
    tls = value.lower()
    if tls in ("", "none", "0", "false"):
        return ""
    if tls in ("tls", "1", "true"):
        return "tls"
    error = UnsupportedLinkError if tls in FOREIGN_TLS else LinkError
    raise error(key, f"{value!r} is not supported by vtwist (expected tls or empty)")


def header(net: str, value: str, key: str) -> str:
    """``type`` as the network understands it (validated when it has header types)."""
    fields = network_fields(net)
    if fields is None:
        return value.lower() or "none"
    return as_link_error(fields.header)(value, key)


def address(value: str, key: str) -> str:
    """A host name or IP address (IPv6 without brackets, compressed)."""
    value = value.strip()
    if not value:
        raise LinkError(key, "is missing (the server address)")
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
    if ":" in value:
        try:
            return str(ipaddress.IPv6Address(value))
        except ValueError:
            raise LinkError(key, f"not a host name or IP address: {value!r}") from None
    if any(c.isspace() or c in "/?#@[]\\%" for c in value):
        raise LinkError(key, f"not a host name or IP address: {value!r}")
    return value


#: what a link error adds when the link seems cut short (copied from a narrow terminal...)
TRUNCATED_HINT = "the link looks truncated: was it cut off when copied?"


def b64_truncated(body: str) -> bool:
    """True when ``body`` has a base64 length no complete encoding has (one char over)."""
    data = "".join(body.split()).rstrip("=")
    return len(data) % 4 == 1


def json_truncated(text: str, position: int, message: str = "") -> bool:
    """True when JSON with an error at ``position`` (``message``) looks cut short: the error
    is at its end, or a string never ends."""
    return position >= len(text.rstrip()) or message.startswith("Unterminated string")


def b64decode(body: str) -> bytes:
    """Base64 of any flavour (standard or URL-safe, padded or not, with whitespace)."""
    data = "".join(body.split())
    data = data.replace("-", "+").replace("_", "/").rstrip("=")
    if not data:
        raise binascii.Error("empty")
    data += "=" * (-len(data) % 4)
    return base64.b64decode(data, validate=True)
