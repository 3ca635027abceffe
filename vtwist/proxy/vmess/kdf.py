"""The VMess AEAD KDF: a stack of HMACs with ``"VMess AEAD KDF"`` innermost.

``KDF(key, p1, .., pn)`` is HMAC layer n (keyed with pn) over ... over HMAC layer 1 (keyed
with p1) over HMAC-SHA256 keyed with the constant, applied to ``key`` as the message. Each
layer uses the layer below as its hash function (block size 64, output 32).

Speed: the stack is kept as plain SHA-256 states. Layer d's hash of a message is
``H_d(m) = H_{d-1}(opad_d || H_{d-1}(ipad_d || m))``; unrolled, it is a fixed sequence of
SHA-256 states each fed the digest of the one before: the innermost state (every layer's
inner pad absorbed) takes the message, and the *tail* (the outer pads' states) follows,
``tail_d = tail_{d-1} + (outer_d,) + tail_{d-1}``. A derivation is then one loop of
``copy``/``update``/``digest`` over that sequence. The labels' layers are built once;
:func:`request_header_keys` derives the four AEAD request-header values of one AuthID and
nonce from their pads computed once.
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
_ZEROS = bytes(_BLOCK)


def _pad(key: bytes) -> bytes:
    return bytes(key).ljust(_BLOCK, b"\0")


def _run(tail: tuple[Any, ...], data: bytes) -> bytes:
    """Feed ``data`` to a copy of each state of ``tail`` in turn, each its predecessor's
    digest; the last digest."""
    for state in tail:
        h = state.copy()
        h.update(data)
        data = h.digest()
    return data


class _Chain:
    """A keyed stack of layers: the innermost SHA-256 state and the tail of outer states."""

    __slots__ = ("inner", "tail")

    def __init__(self, inner: Any, tail: tuple[Any, ...]) -> None:
        self.inner = inner
        self.tail = tail

    def keyed(self, key: bytes) -> _Chain:
        """One more layer on top, keyed with ``key``."""
        key = bytes(key)
        if len(key) > _BLOCK:  # never for VMess's labels, IDs and nonces; HMAC's rule anyway
            key = self.derive(key)
        key = _pad(key)
        outer = self.inner.copy()
        outer.update(key.translate(_OPAD))
        inner = self.inner.copy()
        inner.update(key.translate(_IPAD))
        tail = self.tail
        return _Chain(inner, (*tail, outer, *tail))

    def derive(self, message: bytes) -> bytes:
        """The stack's digest of ``message``."""
        state = self.inner.copy()
        state.update(message)
        return _run(self.tail, state.digest())


# Level 0 is HMAC-SHA256 keyed with ROOT_KEY: its inner state, and its outer state as tail.
_ROOT = _Chain(hashlib.sha256(_pad(ROOT_KEY).translate(_IPAD)),
               (hashlib.sha256(_pad(ROOT_KEY).translate(_OPAD)),))


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


def _derive_depth3(chain: _Chain, key: bytes, ii: bytes, io: bytes, o: bytes) -> bytes:
    """KDF(key, label, a, n) for ``chain`` = the label's layer, given the pads of ``a`` and
    ``n``: ``ii`` = ipad(a) || ipad(n), ``io`` = ipad(a) || opad(n), ``o`` = opad(a)."""
    inner1 = chain.inner
    tail1 = chain.tail
    outer2 = inner1.copy()
    outer2.update(o)
    tail2 = (*tail1, outer2, *tail1)
    h = inner1.copy()
    h.update(ii)
    h.update(key)
    data = _run(tail2, h.digest())
    h = inner1.copy()
    h.update(io)
    h.update(data)
    return _run(tail2, h.digest())


def request_pads(a: bytes, n: bytes) -> tuple[bytes, bytes, bytes]:
    """The HMAC pads of an AuthID ``a`` and nonce ``n`` as the request-header derivations
    take them: (ipad(a) || ipad(n), ipad(a) || opad(n), opad(a))."""
    a = bytes(a)
    n = bytes(n)
    if len(a) > _BLOCK or len(n) > _BLOCK:
        raise ValueError("path elements longer than a block")
    a = a + _ZEROS[len(a):]
    n = n + _ZEROS[len(n):]
    ia = a.translate(_IPAD)
    return ia + n.translate(_IPAD), ia + n.translate(_OPAD), a.translate(_OPAD)


def request_header_keys(cmd_key: bytes, auth_id: bytes, nonce: bytes
                        ) -> tuple[bytes, bytes, bytes, bytes]:
    """(length key, length nonce, header key, header nonce) of an AEAD request header:
    KDF(cmdKey, label, AuthID, nonce) for the four labels, truncated to 16/12/16/12."""
    ii, io, o = request_pads(auth_id, nonce)
    key = bytes(cmd_key)
    return (_derive_depth3(_LEN_KEY, key, ii, io, o)[:16],
            _derive_depth3(_LEN_NONCE, key, ii, io, o)[:12],
            _derive_depth3(_PAYLOAD_KEY, key, ii, io, o)[:16],
            _derive_depth3(_PAYLOAD_NONCE, key, ii, io, o)[:12])


def request_length_keys(cmd_key: bytes, auth_id: bytes, nonce: bytes,
                        pads: tuple[bytes, bytes, bytes] | None = None) -> tuple[bytes, bytes]:
    """(length key, length nonce) of an AEAD request header (see
    :func:`request_header_keys`); ``pads``: :func:`request_pads` of the AuthID and nonce."""
    ii, io, o = pads or request_pads(auth_id, nonce)
    key = bytes(cmd_key)
    return (_derive_depth3(_LEN_KEY, key, ii, io, o)[:16],
            _derive_depth3(_LEN_NONCE, key, ii, io, o)[:12])


def request_payload_keys(cmd_key: bytes, auth_id: bytes, nonce: bytes,
                         pads: tuple[bytes, bytes, bytes] | None = None) -> tuple[bytes, bytes]:
    """(header key, header nonce) of an AEAD request header (see
    :func:`request_header_keys`); ``pads``: :func:`request_pads` of the AuthID and nonce."""
    ii, io, o = pads or request_pads(auth_id, nonce)
    key = bytes(cmd_key)
    return (_derive_depth3(_PAYLOAD_KEY, key, ii, io, o)[:16],
            _derive_depth3(_PAYLOAD_NONCE, key, ii, io, o)[:12])


def response_header_keys(resp_key: bytes, resp_iv: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(length key, length nonce, payload key, payload nonce) of an AEAD response header:
    KDF(key or IV, label) for the four labels, truncated to 16/12/16/12."""
    out = []
    for chain, message, size in ((_RESP_LEN_KEY, resp_key, 16), (_RESP_LEN_IV, resp_iv, 12),
                                 (_RESP_KEY, resp_key, 16), (_RESP_IV, resp_iv, 12)):
        h = chain.inner.copy()
        h.update(message)
        out.append(_run(chain.tail, h.digest())[:size])
    return out[0], out[1], out[2], out[3]


_LEN_KEY = _label(HEADER_LEN_KEY)
_LEN_NONCE = _label(HEADER_LEN_NONCE)
_PAYLOAD_KEY = _label(HEADER_PAYLOAD_KEY)
_PAYLOAD_NONCE = _label(HEADER_PAYLOAD_NONCE)
_RESP_LEN_KEY = _label(RESP_HEADER_LEN_KEY)
_RESP_LEN_IV = _label(RESP_HEADER_LEN_IV)
_RESP_KEY = _label(RESP_HEADER_KEY)
_RESP_IV = _label(RESP_HEADER_IV)
