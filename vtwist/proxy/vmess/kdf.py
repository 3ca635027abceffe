"""The VMess AEAD KDF: a stack of HMACs with ``"VMess AEAD KDF"`` innermost.

``KDF(key, p1, .., pn)`` is HMAC layer n (keyed with pn) over ... over HMAC layer 1 (keyed
with p1) over HMAC-SHA256 keyed with the constant, applied to ``key`` as the message. Each
layer uses the layer below as its hash function (block size 64, output 32).

Speed: the HMAC object for a path prefix is built once and cached; each derivation copies
the prepared object (``.copy()``) instead of re-keying every layer.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Any

ROOT_KEY = b"VMess AEAD KDF"

AUTH_ID_ENCRYPTION_KEY = b"AES Auth ID Encryption"
HEADER_LEN_KEY = b"VMess Header AEAD Key_Length"
HEADER_LEN_NONCE = b"VMess Header AEAD Nonce_Length"
HEADER_PAYLOAD_KEY = b"VMess Header AEAD Key"
HEADER_PAYLOAD_NONCE = b"VMess Header AEAD Nonce"
RESP_HEADER_LEN_KEY = b"AEAD Resp Header Len Key"
RESP_HEADER_LEN_IV = b"AEAD Resp Header Len IV"
RESP_HEADER_KEY = b"AEAD Resp Header Key"
RESP_HEADER_IV = b"AEAD Resp Header IV"

_ROOT = hmac.new(ROOT_KEY, digestmod=hashlib.sha256)
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


class _Layer:
    """HMAC whose hash function is a prepared lower layer (block 64, digest 32)."""

    __slots__ = ("inner", "outer")

    def __init__(self, inner: Any, outer: Any) -> None:
        self.inner = inner
        self.outer = outer

    @classmethod
    def keyed(cls, parent: Any, key: bytes) -> _Layer:
        key = bytes(key)
        if len(key) > 64:
            h = parent.copy()
            h.update(key)
            key = h.digest()
        key = key.ljust(64, b"\0")
        inner = parent.copy()
        inner.update(key.translate(_IPAD))
        outer = parent.copy()
        outer.update(key.translate(_OPAD))
        return cls(inner, outer)

    def copy(self) -> _Layer:
        return _Layer(self.inner.copy(), self.outer.copy())

    def update(self, data: bytes) -> None:
        self.inner.update(data)

    def digest(self) -> bytes:
        outer = self.outer.copy()
        outer.update(self.inner.digest())
        return outer.digest()


@lru_cache(maxsize=256)
def _prefix(path: tuple[bytes, ...]) -> Any:
    """The prepared (keyed, nothing absorbed) object for a constant path prefix."""
    if not path:
        return _ROOT
    return _Layer.keyed(_prefix(path[:-1]), path[-1])


def _build(path: tuple[bytes, ...], n_cached: int) -> Any:
    obj = _prefix(path[:n_cached])
    for element in path[n_cached:]:
        obj = _Layer.keyed(obj, element)
    return obj


def kdf(key: bytes, *path: bytes) -> bytes:
    """KDF(key, path...) -> 32 bytes. Constant leading labels are cached automatically."""
    # Cache only the first element (labels); later elements (auth IDs, nonces) vary.
    n_cached = 1 if path else 0
    h = _build(tuple(path), n_cached).copy()
    h.update(key)
    return h.digest()


def kdf16(key: bytes, *path: bytes) -> bytes:
    """The first 16 bytes of :func:`kdf`."""
    return kdf(key, *path)[:16]
