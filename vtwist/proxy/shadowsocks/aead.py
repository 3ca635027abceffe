"""Shadowsocks AEAD ciphers (SIP004), sans-IO: keys, subkeys, stream chunks, packets.

As V2Ray 4.34 (``proxy/shadowsocks/config.go``, ``common/crypto``) has them:

* the master key is OpenSSL's ``EVP_BytesToKey`` (MD5, no salt) of the password;
* each direction of a stream, and each UDP packet, starts with a random salt as long as the
  key; its subkey is HKDF-SHA1(key, salt, info ``"ss-subkey"``);
* the nonce is a 12-byte little-endian counter from 0, advanced once per seal/open;
* a stream chunk is ``AEAD(BE16 length)`` then ``AEAD(payload)``; the length is at most
  0x3FFF; V2Ray reads a zero length as the end of the stream;
* a packet is ``salt || AEAD(plaintext)`` with nonce 0.

``none`` (alias ``plain``) has no salt, no framing and no tag: the bytes pass as they are.
One :class:`StreamEncoder` / :class:`StreamDecoder` exists per direction of a connection;
the AEAD object is built once, when the salt is known.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

#: The largest payload of one stream chunk (SIP004).
MAX_PAYLOAD = 0x3FFF
TAG = 16
SUBKEY_INFO = b"ss-subkey"

_pack_u16 = struct.Struct(">H").pack


class CipherError(Exception):
    """Bytes that do not decrypt: a bad tag, an impossible length, a short packet."""


@dataclass(frozen=True)
class Method:
    """One cipher method: its canonical name, key (= salt) size and AEAD class (None for
    ``none``)."""

    name: str
    key_size: int
    aead: Callable[[bytes], Any] | None

    @property
    def salt_size(self) -> int:
        """Salt length: the key length (0 for ``none``)."""
        return self.key_size

    @property
    def is_aead(self) -> bool:
        """False only for ``none``."""
        return self.aead is not None


METHODS: dict[str, Method] = {
    "aes-128-gcm": Method("aes-128-gcm", 16, AESGCM),
    "aes-256-gcm": Method("aes-256-gcm", 32, AESGCM),
    "chacha20-poly1305": Method("chacha20-poly1305", 32, ChaCha20Poly1305),
    "none": Method("none", 0, None),
}

#: Every spelling V2Ray 4.34 accepts (any case), to its canonical name.
ALIASES: dict[str, str] = {
    "aes-128-gcm": "aes-128-gcm", "aead_aes_128_gcm": "aes-128-gcm",
    "aes-256-gcm": "aes-256-gcm", "aead_aes_256_gcm": "aes-256-gcm",
    "chacha20-poly1305": "chacha20-poly1305", "aead_chacha20_poly1305": "chacha20-poly1305",
    "chacha20-ietf-poly1305": "chacha20-poly1305",
    "none": "none", "plain": "none",
}


def method_for(name: str) -> Method | None:
    """The :class:`Method` a ``method`` setting names (any case, any alias), else None."""
    canonical = ALIASES.get(name.strip().lower())
    return METHODS[canonical] if canonical else None


def evp_bytes_to_key(password: bytes, size: int) -> bytes:
    """OpenSSL's EVP_BytesToKey with MD5, one round, no salt: the master key."""
    out = b""
    last = b""
    while len(out) < size:
        last = hashlib.md5(last + password).digest()
        out += last
    return out[:size]


def subkey(key: bytes, salt: bytes) -> bytes:
    """HKDF-SHA1(key, salt, ``ss-subkey``), as long as ``key``."""
    return HKDF(hashes.SHA1(), len(key), bytes(salt), SUBKEY_INFO).derive(key)


@dataclass(frozen=True)
class Account:
    """A method and the master key its password gives."""

    method: Method
    key: bytes

    @classmethod
    def from_password(cls, method: Method | str, password: str) -> Account:
        """The account for ``method`` (a Method or a name) and ``password``."""
        if isinstance(method, str):
            found = method_for(method)
            if found is None:
                raise ValueError(f"unknown Shadowsocks method {method!r}")
            method = found
        return cls(method, evp_bytes_to_key(password.encode(), method.key_size))


def random_salt(size: int) -> bytes:
    """A fresh salt."""
    return os.urandom(size)


class StreamEncoder:
    """Seals one direction of a stream: the salt first, then chunks."""

    __slots__ = ("_aead", "_counter", "_salt", "salt")

    def __init__(self, account: Account, salt: bytes | None = None) -> None:
        method = account.method
        self.salt = b""
        self._aead: Any = None
        self._counter = 0
        if method.is_aead:
            self.salt = random_salt(method.salt_size) if salt is None else bytes(salt)
            self._aead = method.aead(subkey(account.key, self.salt))  # type: ignore[misc]
        self._salt: bytes | None = self.salt or None

    def encode(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The wire pieces for ``data`` (the salt comes with the first call); for
        ``writeSequence``. Empty data gives no chunk (a zero length would end the stream)."""
        out: list[bytes] = []
        if self._salt is not None:
            out.append(self._salt)
            self._salt = None
        n = len(data)
        if not n:
            return out
        aead = self._aead
        if aead is None:
            out.append(bytes(data))
            return out
        seal = aead.encrypt
        c = self._counter
        if n <= MAX_PAYLOAD:
            out.append(seal(c.to_bytes(12, "little"), _pack_u16(n), None))
            out.append(seal((c + 1).to_bytes(12, "little"), data, None))
            self._counter = c + 2
            return out
        mv = memoryview(data)
        for off in range(0, n, MAX_PAYLOAD):
            piece = mv[off:off + MAX_PAYLOAD]
            out.append(seal(c.to_bytes(12, "little"), _pack_u16(len(piece)), None))
            out.append(seal((c + 1).to_bytes(12, "little"), piece, None))
            c += 2
        self._counter = c
        return out


class StreamDecoder:
    """Opens one direction of a stream: reads the salt, then chunks.

    :meth:`feed` returns the payloads its bytes complete and raises :class:`CipherError` on
    a bad tag or a length above 0x3FFF. ``salt`` is set once read (the server's replay
    filter looks at it); ``eof`` turns true at a zero-length chunk, as V2Ray reads it.
    """

    __slots__ = ("account", "salt", "chunks", "eof", "_aead", "_counter", "_buf", "_pending")

    def __init__(self, account: Account) -> None:
        self.account = account
        self.salt: bytes | None = None if account.method.is_aead else b""
        #: payload chunks opened so far (the server knows the first tag was good at 1)
        self.chunks = 0
        self.eof = False
        self._aead: Any = None
        self._counter = 0
        self._buf = bytearray()
        self._pending = -1  # payload length of the chunk being read, -1: reading a length

    @property
    def at_boundary(self) -> bool:
        """True when no partial chunk (or salt) is buffered."""
        return not self._buf and self._pending < 0

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete chunk."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Open every chunk ``data`` completes."""
        if self.eof:
            return []
        method = self.account.method
        if not method.is_aead:
            self.chunks += 1
            return [bytes(data)] if len(data) else []
        buf = self._buf
        out: list[bytes] = []
        if self._aead is not None and not buf:
            # The common case: nothing held back; open chunks straight from ``data`` and
            # keep only its incomplete tail.
            pos = self._chunks(data, 0, out)
            if pos < len(data):
                buf += memoryview(data)[pos:]
            return out
        buf += data
        pos = 0
        try:
            if self._aead is None:
                size = method.salt_size
                if len(buf) < size:
                    return out
                self.salt = bytes(buf[:size])
                self._aead = method.aead(subkey(self.account.key, self.salt))  # type: ignore[misc]
                pos = size
            pos = self._chunks(buf, pos, out)
        finally:
            if pos:
                del buf[:pos]
        return out

    def _chunks(self, src: bytes | bytearray | memoryview, pos: int, out: list[bytes]) -> int:
        open_ = self._aead.decrypt
        end = len(src)
        pending = self._pending
        c = self._counter
        with memoryview(src) as mv:
            try:
                while True:
                    if pending < 0:
                        if end - pos < 2 + TAG:
                            break
                        try:
                            plain = open_(c.to_bytes(12, "little"), mv[pos:pos + 2 + TAG], None)
                        except InvalidTag:
                            raise CipherError("chunk length authentication failed") from None
                        c += 1
                        pos += 2 + TAG
                        pending = (plain[0] << 8) | plain[1]
                        if pending > MAX_PAYLOAD:
                            raise CipherError(f"chunk length {pending} above 0x3FFF")
                        if pending == 0:
                            self.eof = True
                            pos = end
                            pending = -1
                            break
                    if end - pos < pending + TAG:
                        break
                    try:
                        out.append(open_(c.to_bytes(12, "little"),
                                         mv[pos:pos + pending + TAG], None))
                    except InvalidTag:
                        raise CipherError("chunk authentication failed") from None
                    c += 1
                    pos += pending + TAG
                    pending = -1
                    self.chunks += 1
            finally:
                self._pending = pending
                self._counter = c
        return pos


def seal_packet(account: Account, plaintext: bytes, salt: bytes | None = None) -> bytes:
    """One UDP packet: ``salt || AEAD(plaintext)`` (``plaintext`` as is for ``none``)."""
    method = account.method
    if not method.is_aead:
        return bytes(plaintext)
    if salt is None:
        salt = random_salt(method.salt_size)
    aead = method.aead(subkey(account.key, salt))  # type: ignore[misc]
    return bytes(salt) + aead.encrypt(bytes(12), plaintext, None)


def open_packet(account: Account, packet: bytes) -> tuple[bytes, bytes]:
    """``(salt, plaintext)`` of one UDP packet; raises :class:`CipherError`."""
    method = account.method
    if not method.is_aead:
        return b"", bytes(packet)
    size = method.salt_size
    if len(packet) < size + TAG:
        raise CipherError(f"packet of {len(packet)} bytes is too short")
    salt = bytes(packet[:size])
    aead = method.aead(subkey(account.key, salt))  # type: ignore[misc]
    try:
        return salt, aead.decrypt(bytes(12), bytes(packet[size:]), None)
    except InvalidTag:
        raise CipherError("packet authentication failed") from None
