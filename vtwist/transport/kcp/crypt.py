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

    As one big-endian integer, shifting right by 32 bits moves byte i to byte i+4, so
    the chain is ``v ^ v>>32 ^ v>>64 ^ ...``: a prefix XOR done in log2(n/4) doubling
    steps.  No padding is needed whatever ``len(data) % 4`` is.
    """
    n = len(data)
    v = int.from_bytes(data, "big")
    shift = 32
    limit = 8 * n
    while shift < limit:
        v ^= v >> shift
        shift <<= 1
    return v.to_bytes(n, "big")


def _unchain_words(data: bytes) -> bytes:
    """Reverse chain: ``P[i] = C[i] ^ C[i-4]`` for i >= 4, using received bytes."""
    v = int.from_bytes(data, "big")
    return (v ^ (v >> 32)).to_bytes(len(data), "big")


class SimpleAuthenticator:
    """FNV-1a-32 checksum over ``len16 || plain`` plus the forward XOR chain."""

    overhead = 6
    nonce_size = 0

    def seal(self, plain: bytes) -> bytes:
        """Wrap ``plain`` (at most 65535 bytes)."""
        body = len(plain).to_bytes(2, "big") + plain
        return _prefix_xor_words(fnv1a_32(body).to_bytes(4, "big") + body)

    def open(self, data: bytes) -> bytes | None:
        """Return the plaintext, or None when the checksum or length is wrong."""
        n = len(data)
        if n <= self.overhead:
            return None
        # the hash is in clear and the length is C[4:6] ^ C[0:2]: reject cheaply first
        if (((data[4] ^ data[0]) << 8) | (data[5] ^ data[1])) != n - 6:
            return None
        p = _unchain_words(data)
        if int.from_bytes(data[:4], "big") != fnv1a_32(p[4:]):
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
