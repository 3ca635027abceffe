"""mKCP envelopes: V2Ray's simple authenticator and the ``seed`` AES-128-GCM mode.

The simple authenticator's stride-4 XOR chain is computed on 32-bit lanes with
big-integer arithmetic (a prefix XOR by doubling shifts), so no Python loop runs
per byte.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fnv_hash_fast import fnv1a_32


def _prefix_xor_words(data: bytes) -> bytes:
    """Forward chain: ``X[i] ^= X[i-4]`` (new values) for every i >= 4.

    Viewing the (zero padded) buffer as 32-bit big-endian words w0..wn, word k of
    the result is w0 ^ w1 ^ ... ^ wk: a prefix XOR, done in log2(n) big-int steps.
    """
    n = len(data)
    pad = (-n) & 3
    total = n + pad
    v = int.from_bytes(data, "big") << (8 * pad)
    words = total >> 2
    shift = 32
    limit = 32 * words
    while shift < limit:
        v ^= v >> shift
        shift <<= 1
    return v.to_bytes(total, "big")[:n]


def _unchain_words(data: bytes) -> bytes:
    """Reverse chain: ``P[i] = C[i] ^ C[i-4]`` for i >= 4, using received bytes."""
    n = len(data)
    pad = (-n) & 3
    total = n + pad
    v = int.from_bytes(data, "big") << (8 * pad)
    v ^= v >> 32
    return v.to_bytes(total, "big")[:n]


class SimpleAuthenticator:
    """FNV-1a-32 checksum over ``len16 || plain`` plus the forward XOR chain."""

    overhead = 6
    nonce_size = 0

    def seal(self, plain: bytes) -> bytes:
        """Wrap ``plain`` (at most 65535 bytes)."""
        n = len(plain)
        body = bytes(((n >> 8) & 0xFF, n & 0xFF)) + plain
        return _prefix_xor_words(fnv1a_32(body).to_bytes(4, "big") + body)

    def open(self, data: bytes) -> bytes | None:
        """Return the plaintext, or None when the checksum or length is wrong."""
        n = len(data)
        if n <= self.overhead:
            return None
        p = _unchain_words(data)
        if int.from_bytes(p[:4], "big") != fnv1a_32(p[4:]):
            return None
        if ((p[4] << 8) | p[5]) != n - 6:
            return None
        return p[6:]


def seed_key(seed: str) -> bytes:
    """AES-128 key for a seed: ``sha256(utf8(seed))[:16]``."""
    return hashlib.sha256(seed.encode("utf-8")).digest()[:16]


class SeedAuthenticator:
    """AES-128-GCM with a random 12-byte nonce per datagram and no AAD."""

    overhead = 16
    nonce_size = 12

    def __init__(self, seed: str, urandom=os.urandom) -> None:
        self._aead = AESGCM(seed_key(seed))
        self._urandom = urandom

    def seal(self, plain: bytes) -> bytes:
        """Encrypt ``plain``; returns ``nonce || ciphertext || tag``."""
        nonce = self._urandom(12)
        return nonce + self._aead.encrypt(nonce, plain, None)

    def open(self, data: bytes) -> bytes | None:
        """Decrypt, or None when too short or the tag does not verify."""
        if len(data) <= 28:
            return None
        try:
            return self._aead.decrypt(data[:12], data[12:], None)
        except InvalidTag:
            return None


Authenticator = SimpleAuthenticator | SeedAuthenticator


def make_authenticator(seed: str | None) -> Authenticator:
    """Simple mode when ``seed`` is None; AES-GCM otherwise (``""`` is a real seed)."""
    if seed is None:
        return SimpleAuthenticator()
    return SeedAuthenticator(seed)
