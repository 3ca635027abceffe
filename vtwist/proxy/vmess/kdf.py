"""The VMess AEAD KDF: a stack of HMACs with ``"VMess AEAD KDF"`` innermost.

``KDF(key, p1, .., pn)`` is HMAC layer n (keyed with pn) over ... over HMAC layer 1 (keyed
with p1) over HMAC-SHA256 keyed with the constant, applied to ``key`` as the message. Each
layer uses the layer below as its hash function (block size 64, output 32).

Speed: the stack is kept as plain SHA-256 states (the innermost state absorbs every layer's
inner pad; each layer keeps one state primed with its outer pad), so a derivation is a few
``hashlib`` copies rather than copies of nested HMAC objects. The label's layer is cached.
"""

from __future__ import annotations

import hashlib
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

_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))
_BLOCK = 64


def _pad(key: bytes) -> bytes:
    return bytes(key).ljust(_BLOCK, b"\0")


# Level 0 is HMAC-SHA256 keyed with ROOT_KEY: its inner and outer SHA-256 states.
_INNER0 = hashlib.sha256(_pad(ROOT_KEY).translate(_IPAD))
_OUTER0 = hashlib.sha256(_pad(ROOT_KEY).translate(_OPAD))


def _digest(state: Any, outers: tuple[Any, ...]) -> bytes:
    """The digest of the HMAC stack whose innermost SHA-256 ``state`` has absorbed the inner
    pads of every layer and then the message; ``outers[j]`` is a fresh layer-j object that has
    absorbed layer j+1's outer pad (so HMAC_k(m) = H_{k-1}(opad_k || H_{k-1}(ipad_k || m))).

    The depths VMess uses (one to three path elements) are unrolled below: the same hashing,
    a third of the Python calls of the recursion."""
    depth = len(outers)
    if depth == 1:
        return _digest1(state, outers[0])
    if depth == 2:
        return _digest2(state, outers[0], outers[1])
    if depth == 3:
        return _digest3(state, outers[0], outers[1], outers[2])
    if not outers:
        outer = _OUTER0.copy()
        outer.update(state.digest())
        return outer.digest()
    below = outers[:-1]
    top = outers[-1].copy()
    top.update(_digest(state, below))
    return _digest(top, below)


def _digest1(state: Any, o1: Any) -> bytes:
    leaf = _OUTER0.copy()
    leaf.update(state.digest())
    top = o1.copy()
    top.update(leaf.digest())
    leaf = _OUTER0.copy()
    leaf.update(top.digest())
    return leaf.digest()


def _digest2(state: Any, o1: Any, o2: Any) -> bytes:
    top = o2.copy()
    top.update(_digest1(state, o1))
    return _digest1(top, o1)


def _digest3(state: Any, o1: Any, o2: Any, o3: Any) -> bytes:
    top = o3.copy()
    top.update(_digest2(state, o1, o2))
    return _digest2(top, o1, o2)


class _Chain:
    """A keyed stack of layers as plain SHA-256 states: nothing but hashlib copies per use."""

    __slots__ = ("inner", "outers")

    def __init__(self, inner: Any, outers: tuple[Any, ...]) -> None:
        self.inner = inner
        self.outers = outers

    def keyed(self, key: bytes) -> _Chain:
        """One more layer on top, keyed with ``key``."""
        key = bytes(key)
        if len(key) > _BLOCK:  # never for VMess's labels, IDs and nonces; HMAC's rule anyway
            state = self.inner.copy()
            state.update(key)
            key = _digest(state, self.outers)
        key = _pad(key)
        outer = self.inner.copy()
        outer.update(key.translate(_OPAD))
        inner = self.inner.copy()
        inner.update(key.translate(_IPAD))
        return _Chain(inner, (*self.outers, outer))

    def derive(self, message: bytes) -> bytes:
        """The stack's digest of ``message``."""
        state = self.inner.copy()
        state.update(message)
        return _digest(state, self.outers)


_ROOT = _Chain(_INNER0, ())


@lru_cache(maxsize=256)
def _label(label: bytes) -> _Chain:
    """The chain for a constant first path element (a label), built once."""
    return _ROOT.keyed(label)


def kdf(key: bytes, *path: bytes) -> bytes:
    """KDF(key, path...) -> 32 bytes. The leading label's layer is cached."""
    if not path:
        return _ROOT.derive(key)
    chain = _label(bytes(path[0]))
    for element in path[1:]:
        chain = chain.keyed(element)
    return chain.derive(key)


def kdf16(key: bytes, *path: bytes) -> bytes:
    """The first 16 bytes of :func:`kdf`."""
    return kdf(key, *path)[:16]
