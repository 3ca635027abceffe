"""VMess body codecs (sans-IO): chunk framing, ciphers, length masking and padding.

One :class:`BodyEncoder` and one :class:`BodyDecoder` exist per direction of a connection.
Both are built once (ciphers, the SHAKE128 mask stream, nonce tail) and then fed bytes.

Per chunk, in the order V2Ray 4.34 uses (reference section 9.1)::

    P    = shake word % 64          if GlobalPadding   (read first)
    seal = AEAD(payload)            len + overhead
    LEN  = (len(seal) + P) ^ word   if ChunkMasking    (read second)
    wire = BE16(LEN) || seal || P random bytes

Security values: 1 legacy (AES-128-CFB over FNV-authenticated chunks), 3 AES-128-GCM,
4 ChaCha20-Poly1305, 5 none.  ``packet=True`` is UDP mode: one datagram per chunk.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from fnv_hash_fast import fnv1a_32

from vtwist.entropy import RandomPool

try:  # cryptography >= 47 moved CFB to the "decrepit" package
    from cryptography.hazmat.decrepit.ciphers.modes import CFB as _CFB
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.modes import CFB as _CFB

OPT_CHUNK_STREAM = 0x01
OPT_CONNECTION_REUSE = 0x02
OPT_CHUNK_MASKING = 0x04
OPT_GLOBAL_PADDING = 0x08
OPT_AUTHENTICATED_LENGTH = 0x10

SEC_UNKNOWN = 0
SEC_LEGACY = 1
SEC_AUTO = 2
SEC_AES128_GCM = 3
SEC_CHACHA20_POLY1305 = 4
SEC_NONE = 5

#: V2Ray's buffer size (``buf.Size``): V2Ray 4.34's writer never makes a chunk (length
#: field, sealed payload, padding) larger. Datagrams (packet mode) always keep this limit.
MAX_CHUNK = 2048
#: The largest chunk (length field + sealed payload + padding) vtwist sends on a stream.
#: The length field allows 65535, and the readers accept more than V2Ray's writer sends:
#: V2Ray 4.34 and v2fly v5 (common/crypto/auth.go ``AuthenticationReader.readInternal``:
#: a chunk over ``buf.Size`` is read into ``bytespool.Alloc(size)``; none security's
#: common/crypto/chunk.go ``ChunkStreamReader`` reads any length) and Xray-core (the same
#: code, ``buf.Size`` 8192) take any 16-bit length. The strictest reader in the field is
#: sing-vmess (SagerNet/sing-vmess protocol.go ``ReadChunkSize = 16384``: service.go and
#: client.go read through ``bufio.NewChunkReader(reader, ReadChunkSize)``, and
#: chunk_stream.go ``StreamChunkReader.Read`` fails with ``io.ErrShortBuffer`` when a
#: chunk's sealed part does not fit that 16384-byte buffer). A whole chunk of at most
#: 16384 bytes keeps the sealed part under that limit for every security.
MAX_SEND_CHUNK = 16384
#: What vtwist's client and server send per chunk unless told otherwise (an outbound's
#: ``chunkSize``); the codec's own default stays V2Ray's :data:`MAX_CHUNK`.
DEFAULT_SEND_CHUNK = MAX_SEND_CHUNK
#: V2Ray's slice size for unpadded, unauthenticated NONE stream chunks.
NONE_STREAM_SLICE = 8192
MAX_PADDING = 64

_pack_u16 = struct.Struct(">H").pack
_unpack_hh = struct.Struct(">HH").unpack_from


#: Cheap random padding bytes (padding content is never checked: V2Ray fills it from
#: math/rand): slices of a 64 KiB ``os.urandom`` block, no system call per chunk.
padding_bytes = RandomPool(65536)
RandomBytes = Callable[[int], bytes]


class BodyError(Exception):
    """The body cannot be decoded: bad tag/checksum, bad length, or bad options."""


def chacha20_key(key16: bytes) -> bytes:
    """VMess's 32-byte ChaCha20-Poly1305 key: MD5(k) || MD5(MD5(k))."""
    first = hashlib.md5(key16).digest()
    return first + hashlib.md5(first).digest()


class ShakeStream:
    """SHAKE128 over an IV, read as a continuous stream of big-endian 16-bit words.

    The first block comes from ``hashlib`` (a third of the cost of setting up a streaming
    XOF; a short connection never reads further); a longer stream continues from a
    streaming XOF squeezed past that block.
    """

    __slots__ = ("_iv", "_xof", "_buf", "_pos")

    _BLOCK = 336  # a multiple of SHAKE128's rate (168) keeps squeezes cheap
    _FIRST = 168  # the first block: one Keccak permutation

    def __init__(self, iv: bytes) -> None:
        self._iv = bytes(iv)
        self._xof: hashes.XOFHash | None = None
        self._buf = b""
        self._pos = 0

    def _more(self, pos: int) -> bytes:
        """The unread bytes from ``pos`` followed by the next block of the stream."""
        xof = self._xof
        if xof is None:
            if not self._buf:
                self._buf = hashlib.shake_128(self._iv).digest(self._FIRST)
                return self._buf
            xof = self._xof = hashes.XOFHash(hashes.SHAKE128(digest_size=1 << 62))
            xof.update(self._iv)
            xof.squeeze(self._FIRST)  # what hashlib gave already
        self._buf = self._buf[pos:] + xof.squeeze(self._BLOCK)
        return self._buf

    def next_word(self) -> int:
        """The next 16-bit word of the stream."""
        pos = self._pos
        buf = self._buf
        if pos + 2 > len(buf):
            buf = self._more(pos)
            pos = 0
        self._pos = pos + 2
        return (buf[pos] << 8) | buf[pos + 1]

    def next_pair(self) -> tuple[int, int]:
        """The next two words (padding word, then mask word)."""
        pos = self._pos
        buf = self._buf
        if pos + 4 > len(buf):
            buf = self._more(pos)
            pos = 0
        self._pos = pos + 4
        return _unpack_hh(buf, pos)

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream (for tests and diagnostics)."""
        out = bytearray()
        for _ in range(n // 2):
            out += _pack_u16(self.next_word())
        return bytes(out)


def check_options(security: int, option: int) -> None:
    """Raise BodyError for option/security combinations that cannot be framed safely."""
    if option & OPT_GLOBAL_PADDING and not option & OPT_CHUNK_MASKING:
        raise BodyError("GlobalPadding without ChunkMasking")
    if security not in (SEC_LEGACY, SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_NONE):
        raise BodyError(f"unsupported body security {security}")


def aes_cfb(key: bytes, iv: bytes, encrypt: bool):
    """A streaming AES-128-CFB (full-block, as Go's CFB) encryptor or decryptor."""
    cipher = Cipher(algorithms.AES(bytes(key)), _CFB(bytes(iv)))
    return cipher.encryptor() if encrypt else cipher.decryptor()


class _Framing:
    """Shared per-direction state: cipher, nonce counter, SHAKE stream, sizes."""

    def __init__(self, security: int, option: int, key: bytes, iv: bytes, packet: bool,
                 cfb: object | None, encrypt: bool) -> None:
        check_options(security, option)
        self.security = security
        self.option = option
        self.packet = packet
        self.chunked = bool(option & OPT_CHUNK_STREAM) or security in (
            SEC_AES128_GCM, SEC_CHACHA20_POLY1305)
        self.eos_chunk = bool(option & OPT_CHUNK_STREAM)
        self.masking = bool(option & OPT_CHUNK_MASKING)
        self.shake = ShakeStream(iv) if self.masking else None
        # Plain NONE stream chunks ignore GlobalPadding (reference 9.4).
        self.none_stream = security == SEC_NONE and not packet
        self.padding = bool(option & OPT_GLOBAL_PADDING) and not self.none_stream
        self.counter = 0
        # The AEAD nonce: BE16(counter) || iv[2:12], one buffer per stream updated in place.
        self._nonce = bytearray(2) + bytes(iv[2:12])
        self.aead: AESGCM | ChaCha20Poly1305 | None = None
        self.overhead = 0
        self.cfb = None
        if security == SEC_AES128_GCM:
            self.aead = AESGCM(bytes(key))
            self.overhead = 16
        elif security == SEC_CHACHA20_POLY1305:
            self.aead = ChaCha20Poly1305(chacha20_key(bytes(key)))
            self.overhead = 16
        elif security == SEC_LEGACY:
            self.overhead = 4
            self.cfb = cfb if cfb is not None else aes_cfb(key, iv, encrypt)

    def nonce(self) -> bytearray:
        """The next chunk's nonce (the same buffer each time: use it before the next call)."""
        n = self._nonce
        c = self.counter
        n[0] = (c >> 8) & 0xFF
        n[1] = c & 0xFF
        self.counter = c + 1
        return n

    def size_words(self) -> tuple[int, int]:
        """(padding length, length mask) of the next chunk, read from the SHAKE stream."""
        if self.padding:
            pad, mask = self.shake.next_pair()  # type: ignore[union-attr]
            return pad % MAX_PADDING, mask
        return 0, (self.shake.next_word() if self.masking else 0)  # type: ignore[union-attr]


class BodyEncoder:
    """Turns payload writes into wire bytes for one direction.

    ``encode`` returns one byte string per chunk; ``encode_sequence`` returns the same
    bytes as separate pieces (length field, sealed payload, padding) for ``writeSequence``,
    so no chunk is copied just to prepend its two-byte length.
    Stream mode cuts each write into chunks of at most ``chunk_size`` wire bytes (V2Ray's
    2048 by default; up to :data:`MAX_SEND_CHUNK`), NONE into V2Ray's 8192-byte slices
    (or ``chunk_size - 2`` when that is larger). Packet mode (UDP) makes exactly one
    chunk per datagram and keeps V2Ray's 2048 whatever ``chunk_size`` says.
    """

    def __init__(self, security: int, option: int, key: bytes, iv: bytes, *,
                 packet: bool = False, random_bytes: RandomBytes = padding_bytes,
                 cfb: object | None = None, chunk_size: int = MAX_CHUNK) -> None:
        if not MAX_CHUNK <= chunk_size <= MAX_SEND_CHUNK:
            raise ValueError(f"chunk size {chunk_size} outside {MAX_CHUNK}..{MAX_SEND_CHUNK}")
        f = self._f = _Framing(security, option, key, iv, packet, cfb, encrypt=True)
        self._random = random_bytes
        self.closed = False
        self.dropped = 0
        self.chunk_size = MAX_CHUNK if packet else chunk_size
        if f.none_stream and f.chunked:
            self.max_payload = max(NONE_STREAM_SLICE, self.chunk_size - 2)
        else:
            self.max_payload = (self.chunk_size - 2 - f.overhead
                                - (MAX_PADDING if f.padding else 0))

    @property
    def packet(self) -> bool:
        """True in UDP mode (one datagram per chunk)."""
        return self._f.packet

    def _seal(self, payload: bytes | memoryview, out: list[bytes]) -> None:
        """Append one chunk's pieces (length field, sealed payload, padding) to ``out``."""
        f = self._f
        pad, mask = f.size_words()
        aead = f.aead
        if aead is not None:
            sealed = aead.encrypt(f.nonce(), payload, None)
        elif f.security == SEC_LEGACY:
            payload = bytes(payload)
            sealed = struct.pack(">I", fnv1a_32(payload)) + payload
        else:
            sealed = payload if type(payload) is bytes else bytes(payload)
        out.append(_pack_u16((len(sealed) + pad) ^ mask))
        out.append(sealed)
        if pad:
            out.append(self._random(pad))

    def _slices(self, data: bytes | bytearray | memoryview) -> list[bytes | memoryview]:
        """The payload of each chunk of one write (empty for a dropped datagram)."""
        f = self._f
        if f.packet:
            worst = len(data) + f.overhead + 2 + (MAX_PADDING - 1 if f.padding else 0)
            if worst > MAX_CHUNK:
                self.dropped += 1  # V2Ray drops oversized datagrams; never desync the masks
                return []
            return [data if type(data) is bytes else bytes(data)]
        step = self.max_payload
        if len(data) <= step:
            return [data if type(data) is bytes else memoryview(data)]
        mv = memoryview(data)
        return [mv[off:off + step] for off in range(0, len(mv), step)]

    def _check(self, data: bytes | bytearray | memoryview) -> bool:
        if self.closed:
            raise BodyError("write after end of stream")
        return bool(len(data))

    def encode_sequence(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Frame one write (stream) or one datagram (packet mode) as pieces for
        ``writeSequence``: their concatenation is the wire bytes."""
        if not self._check(data):
            return []
        f = self._f
        if not f.chunked:
            return self._out([bytes(data)])
        if f.aead is not None and not f.packet:
            return self._sequence_aead(data)
        out: list[bytes] = []
        seal = self._seal
        for payload in self._slices(data):
            seal(payload, out)
        return self._out(out)

    def _sequence_aead(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """``encode_sequence`` for AEAD streams: :meth:`_seal` inlined (the hot path)."""
        f = self._f
        encrypt = f.aead.encrypt  # type: ignore[union-attr]
        nonce = f._nonce
        counter = f.counter
        shake = f.shake
        padding = f.padding
        random = self._random
        pack = _pack_u16
        out: list[bytes] = []
        append = out.append
        for payload in self._slices(data):
            if padding:
                pad, mask = shake.next_pair()  # type: ignore[union-attr]
                pad %= MAX_PADDING
            else:
                pad = 0
                mask = shake.next_word() if shake is not None else 0
            nonce[0] = (counter >> 8) & 0xFF
            nonce[1] = counter & 0xFF
            counter += 1
            sealed = encrypt(nonce, payload, None)
            append(pack((len(sealed) + pad) ^ mask))
            append(sealed)
            if pad:
                append(random(pad))
        f.counter = counter
        return out

    def encode(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Frame one write (stream) or one datagram (packet mode): one string per chunk."""
        if not self._check(data):
            return []
        f = self._f
        if not f.chunked:
            return self._out([bytes(data)])
        chunks = []
        for payload in self._slices(data):
            pieces: list[bytes] = []
            self._seal(payload, pieces)
            chunks.append(b"".join(pieces))
        if f.cfb is None:
            return chunks
        return [f.cfb.update(c) for c in chunks]

    def _out(self, pieces: list[bytes]) -> list[bytes]:
        cfb = self._f.cfb
        if cfb is None or not pieces:
            return pieces
        return [cfb.update(b"".join(pieces))]

    def end(self) -> list[bytes]:
        """The end-of-stream chunk (empty when ChunkStream is off)."""
        if self.closed:
            return []
        self.closed = True
        f = self._f
        if not f.eos_chunk:
            return []
        if f.none_stream:
            size = 0
            if f.masking:
                size ^= f.shake.next_word()  # type: ignore[union-attr]
            return self._out([_pack_u16(size)])
        out: list[bytes] = []
        self._seal(b"", out)
        return self._out([b"".join(out)])


class BodyDecoder:
    """Turns wire bytes into payloads for one direction.

    ``feed`` returns a list of payloads (in packet mode each one is a datagram) and raises
    :class:`BodyError` on any authentication failure or impossible length. After the
    end-of-stream chunk ``eof`` is True and further input is ignored.

    Input is appended to one buffer and decoded from there. (Decoding complete chunks
    straight from the bytes fed and copying only the partial tail measured no faster with
    AEAD chunks: the copy is cheap next to the decrypt; see benchmarks/README.md.)
    """

    def __init__(self, security: int, option: int, key: bytes, iv: bytes, *,
                 packet: bool = False, cfb: object | None = None) -> None:
        self._f = _Framing(security, option, key, iv, packet, cfb, encrypt=False)
        self._buf = bytearray()
        self._pending: tuple[int, int] | None = None  # (length, padding) of current chunk
        self._discard = 0  # trailing bytes of the end-of-stream chunk still to skip
        self.eof = False

    @property
    def at_boundary(self) -> bool:
        """True when no partial chunk is buffered (a close here is a normal end)."""
        if self.eof:
            return self._discard == 0
        return self._pending is None and not self._buf

    def feed(self, data: bytes | bytearray | memoryview) -> list:
        """Decode as many complete chunks as ``data`` completes."""
        f = self._f
        if self.eof:
            if self._discard:
                self._discard = max(0, self._discard - len(data))
            return []
        if f.cfb is not None:
            data = f.cfb.update(bytes(data))
        if not f.chunked:
            return [bytes(data)] if len(data) else []
        buf = self._buf
        buf += data
        out: list = []
        pos = 0
        try:
            pos = self._decode(buf, out)
        finally:
            del buf[:pos]
        return out

    def _decode(self, src: bytes | bytearray | memoryview, out: list) -> int:
        """Decode complete chunks of ``src`` into ``out``; return the bytes consumed."""
        f = self._f
        end = len(src)
        pos = 0
        aead = f.aead
        overhead = f.overhead
        nonce = f.nonce
        shake = f.shake
        padding = f.padding
        none_stream = f.none_stream
        with memoryview(src) as mv:
            while True:
                pending = self._pending
                if pending is None:
                    if end - pos < 2:
                        break
                    size = (mv[pos] << 8) | mv[pos + 1]
                    pos += 2
                    if padding:
                        pad, mask = shake.next_pair()  # type: ignore[union-attr]
                        pad %= MAX_PADDING
                        size ^= mask
                    else:
                        pad = 0
                        if shake is not None:
                            size ^= shake.next_word()
                    if none_stream:
                        if size == 0:
                            return self._eos(pos, end, 0)
                    elif size == overhead + pad:
                        return self._eos(pos, end, size)
                    elif size < overhead + pad:
                        raise BodyError(f"chunk length {size} shorter than its overhead")
                    pending = self._pending = (size, pad)
                size, pad = pending
                if end - pos < size:
                    break
                body = mv[pos:pos + size - pad]
                pos += size
                self._pending = None
                try:
                    if aead is not None:
                        try:
                            out.append(aead.decrypt(nonce(), body, None))
                        except InvalidTag:
                            raise BodyError("chunk authentication failed") from None
                    elif f.security == SEC_LEGACY:
                        payload = bytes(body[4:])
                        if int.from_bytes(body[:4], "big") != fnv1a_32(payload):
                            raise BodyError("chunk checksum mismatch")
                        out.append(payload)
                    else:
                        out.append(bytes(body))
                finally:
                    body.release()
        return pos

    def _eos(self, pos: int, end: int, trailing: int) -> int:
        self.eof = True
        self._pending = None
        take = min(trailing, end - pos)
        self._discard = trailing - take
        return end
