"""V2Ray 4.34's QUIC packet obfuscation (sans-IO): an mKCP disguise header, then the QUIC
datagram sealed with an AEAD keyed by ``quicSettings.key``.

On the wire: ``header (0-13 bytes) | nonce (12 random bytes) | AEAD(QUIC datagram)`` with
security aes-128-gcm or chacha20-poly1305 (the key is SHA-256 of ``key + "v2ray-quic-salt"``,
its first 16 bytes for AES), or ``header | QUIC datagram`` with security none. A datagram
that does not open is dropped, as V2Ray drops it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from vtwist.transport.kcp.obfs import make_header
from vtwist.transport.quic.settings import QUICSettings

SALT = b"v2ray-quic-salt"
NONCE_SIZE = 12
TAG_SIZE = 16


def derive_key(key: str) -> bytes:
    """SHA-256 of the key and V2Ray's salt."""
    return hashlib.sha256(key.encode() + SALT).digest()


class PacketCodec:
    """Wraps outgoing and unwraps incoming datagrams for one UDP socket.

    ``random_bytes(n)`` gives the nonces (``os.urandom`` unless a test passes its own).
    """

    def __init__(self, settings: QUICSettings,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.header = make_header(settings.header_type)
        self.header_size = self.header.size
        self.random_bytes = random_bytes
        key = derive_key(settings.key)
        self.aead: AESGCM | ChaCha20Poly1305 | None
        if settings.security == "aes-128-gcm":
            self.aead = AESGCM(key[:16])
        elif settings.security == "chacha20-poly1305":
            self.aead = ChaCha20Poly1305(key)
        else:
            self.aead = None
        self.identity = self.aead is None and self.header_size == 0

    @property
    def overhead(self) -> int:
        """Bytes a wrapped datagram has beyond the QUIC datagram."""
        return self.header_size + (NONCE_SIZE + TAG_SIZE if self.aead is not None else 0)

    def seal(self, datagram: bytes) -> bytes:
        """The wire form of a QUIC datagram."""
        if self.identity:
            return datagram
        head = self.header.next()
        if self.aead is None:
            return head + datagram
        nonce = self.random_bytes(NONCE_SIZE)
        return head + nonce + self.aead.encrypt(nonce, datagram, None)

    def open(self, data: bytes) -> bytes | None:
        """The QUIC datagram inside a received one, or None (drop it)."""
        if self.identity:
            return data
        if len(data) <= self.header_size:
            return None
        payload = data[self.header_size:]
        if self.aead is None:
            return payload
        if len(payload) <= NONCE_SIZE:
            return None
        try:
            return self.aead.decrypt(payload[:NONCE_SIZE], payload[NONCE_SIZE:], None)
        except InvalidTag:
            return None
