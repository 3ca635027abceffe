"""VMess request/response headers: the instruction plaintext and the AEAD seal/open.

Sans-IO: pure functions over bytes, time passed in. The legacy (MD5/CFB) variants live in
:mod:`vtwist.proxy.vmess.legacy`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fnv_hash_fast import fnv1a_32

from vtwist.address import Destination, is_valid_domain, normalize_host
from vtwist.entropy import random_bytes
from vtwist.proxy.vmess import kdf as K
from vtwist.proxy.vmess.body import SEC_AUTO, SEC_LEGACY, SEC_NONE, SEC_UNKNOWN

CMD_TCP = 1
CMD_UDP = 2
CMD_MUX = 3

ATYP_IPV4 = 1
ATYP_DOMAIN = 2
ATYP_IPV6 = 3

#: Fixed part of the instruction: Ver, IV, key, V, Opt, P|Sec, reserved, Cmd.
FIXED_LEN = 38
#: Allowed distance between the AuthID timestamp and the server clock (inclusive).
AUTH_ID_WINDOW = 120

MUX_DESTINATION = Destination("tcp", "v1.mux.cool", 0)

CMD_SWITCH_ACCOUNT = 1


class HeaderError(Exception):
    """A request or response header that cannot be accepted; ``reason`` is loggable."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The decoded instruction of a VMess request."""

    command: int
    destination: Destination
    security: int
    option: int
    body_key: bytes
    body_iv: bytes
    response_v: int
    version: int = 1


# -- instruction plaintext -------------------------------------------------------------

def encode_address(dest: Destination) -> bytes:
    """Port, ATYP and address in VMess order (port first, ATYP 1/2/3)."""
    ip = dest.ip
    port = struct.pack(">H", dest.port)
    if isinstance(ip, ipaddress.IPv4Address):
        return port + bytes([ATYP_IPV4]) + ip.packed
    if isinstance(ip, ipaddress.IPv6Address):
        return port + bytes([ATYP_IPV6]) + ip.packed
    host = dest.host.encode("ascii")
    if len(host) > 255:
        raise ValueError("domain longer than 255 bytes")
    return port + bytes([ATYP_DOMAIN, len(host)]) + host


def encode_instruction(h: RequestHeader, padding: bytes = b"") -> bytes:
    """The instruction plaintext (with FNV-1a checksum) for ``h`` and ``padding`` (0..15)."""
    address = b"" if h.command == CMD_MUX else encode_address(h.destination)
    return instruction_bytes(h.body_iv, h.body_key, h.response_v, h.option, h.security,
                             h.command, address, padding, h.version)


def instruction_bytes(body_iv: bytes, body_key: bytes, response_v: int, option: int,
                      security: int, command: int, address: bytes, padding: bytes = b"",
                      version: int = 1) -> bytes:
    """The instruction plaintext from its fields, ``address`` already encoded
    (:func:`encode_address`; empty for Mux.Cool), with the FNV-1a checksum."""
    if len(padding) > 15:
        raise ValueError("header padding is at most 15 bytes")
    if len(body_iv) != 16 or len(body_key) != 16:
        raise ValueError("body key and IV must be 16 bytes")
    plain = b"".join((
        bytes((version,)), body_iv, body_key,
        bytes((response_v, option, (len(padding) << 4) | (security & 0x0F), 0, command)),
        address, padding))
    return plain + fnv1a_32(plain).to_bytes(4, "big")


def instruction_needed(plain: bytes | bytearray | memoryview) -> int:
    """How many plaintext bytes the instruction needs, judging from the prefix given.

    The answer only grows as more of the prefix is known; once ``len(plain)`` reaches it,
    it is the exact total length.
    """
    n = len(plain)
    if n < FIXED_LEN:
        return FIXED_LEN
    pad = plain[35] >> 4
    if plain[37] == CMD_MUX:
        return FIXED_LEN + pad + 4
    if n < FIXED_LEN + 3:
        return FIXED_LEN + 3
    atyp = plain[40]
    if atyp == ATYP_IPV4:
        addr = 4
    elif atyp == ATYP_IPV6:
        addr = 16
    elif atyp == ATYP_DOMAIN:
        if n < FIXED_LEN + 4:
            return FIXED_LEN + 4
        addr = 1 + plain[41]
    else:
        raise HeaderError(f"invalid address type {atyp}")
    return FIXED_LEN + 3 + addr + pad + 4


def parse_security(nibble: int) -> int:
    """The 4.34 server's reading of the security nibble (0 means legacy; unknown -> 0)."""
    if nibble == SEC_UNKNOWN:
        return SEC_LEGACY
    if 1 <= nibble <= SEC_NONE:
        return nibble
    return SEC_UNKNOWN


def checksum_ok(plain: bytes | bytearray | memoryview) -> bool:
    """True when the trailing FNV-1a of an instruction matches its bytes."""
    return int.from_bytes(plain[-4:], "big") == fnv1a_32(bytes(plain[:-4]))


def parse_instruction(plain: bytes | bytearray | memoryview) -> RequestHeader:
    """Decode a complete instruction. The checksum must have been checked already.

    Raises HeaderError for an unusable address, command or security value.
    """
    if type(plain) is not bytes:
        plain = bytes(plain)
    cmd = plain[37]
    network = "udp" if cmd == CMD_UDP else "tcp"
    if cmd == CMD_MUX:
        dest = MUX_DESTINATION
    elif cmd == CMD_TCP or cmd == CMD_UDP:
        port = (plain[38] << 8) | plain[39]
        atyp = plain[40]
        try:
            if atyp == ATYP_IPV4:
                if len(plain) < 45:
                    raise ValueError("short IPv4 address")
                host = f"{plain[41]}.{plain[42]}.{plain[43]}.{plain[44]}"
            elif atyp == ATYP_IPV6:
                host = normalize_host(str(ipaddress.IPv6Address(plain[41:57])))
            else:
                raw = plain[42:42 + plain[41]]
                host = raw.decode("ascii")
                if not is_valid_domain(host):
                    raise HeaderError("invalid remote address")
                if host[:1].isdigit() or host[:1] == "[":
                    host = normalize_host(host)
        except (UnicodeDecodeError, ValueError):
            raise HeaderError("invalid remote address") from None
        dest = Destination(network, host, port)
    else:
        raise HeaderError(f"unknown command {cmd}")
    security = parse_security(plain[35] & 0x0F)
    if security in (SEC_UNKNOWN, SEC_AUTO):
        raise HeaderError(f"unknown security type {plain[35] & 0x0F}")
    return RequestHeader(
        command=cmd, destination=dest, security=security, option=plain[34],
        body_key=plain[17:33], body_iv=plain[1:17], response_v=plain[33], version=plain[0])


# -- AEAD request header ---------------------------------------------------------------

def auth_id_key(cmd_key: bytes) -> bytes:
    """The AES key that encrypts AuthIDs: KDF16(cmdKey, "AES Auth ID Encryption")."""
    return K.kdf16(cmd_key, K.AUTH_ID_ENCRYPTION_KEY)


@lru_cache(maxsize=1024)
def _auth_id_encryptor(cmd_key: bytes) -> Any:
    """An AES-128-ECB encryptor under a user's AuthID key: a per-user constant, built once
    (ECB encrypts each 16-byte block on its own, so one context serves every AuthID)."""
    return Cipher(algorithms.AES(auth_id_key(cmd_key)), modes.ECB()).encryptor()


_pack_q = struct.Struct(">q").pack
_pack_u16 = struct.Struct(">H").pack


def auth_id_plain(timestamp: int, rand4: bytes) -> bytes:
    """The AuthID block before encryption: BE64(ts) || rand || CRC32."""
    head = _pack_q(timestamp) + rand4
    return head + zlib.crc32(head).to_bytes(4, "big")


def create_auth_id(cmd_key: bytes, timestamp: int, rand4: bytes | None = None) -> bytes:
    """AES-128-ECB(auth key, BE64(ts) || 4 random || CRC32)."""
    rand4 = random_bytes(4) if rand4 is None else rand4
    return _auth_id_encryptor(bytes(cmd_key)).update(auth_id_plain(timestamp, rand4))


def check_auth_id_plain(block: bytes) -> int | None:
    """The timestamp of a decrypted AuthID block if its CRC matches and it is not negative.

    The caller compares it with its clock (see :meth:`UserTable.match_aead`).
    """
    if zlib.crc32(block[:12]) != int.from_bytes(block[12:16], "big"):
        return None
    ts = struct.unpack(">q", block[:8])[0]
    if ts < 0:
        return None
    return ts


def header_keys(cmd_key: bytes, auth_id: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(length key, length nonce, header key, header nonce) for an AEAD request."""
    return K.request_header_keys(cmd_key, auth_id, nonce)


def seal_request_header(cmd_key: bytes, instruction: bytes, timestamp: int,
                        rand4: bytes | None = None, nonce: bytes | None = None) -> bytes:
    """AuthID || sealed length (18) || nonce (8) || sealed instruction."""
    if rand4 is None or nonce is None:
        fresh = random_bytes(12)
        rand4 = fresh[:4] if rand4 is None else rand4
        nonce = fresh[4:] if nonce is None else nonce
    auth_id = create_auth_id(cmd_key, timestamp, rand4)
    lk, ln, hk, hn = K.request_header_keys(cmd_key, auth_id, nonce)
    sealed_len = AESGCM(lk).encrypt(ln, _pack_u16(len(instruction)), auth_id)
    sealed = AESGCM(hk).encrypt(hn, instruction, auth_id)
    return b"".join((auth_id, sealed_len, nonce, sealed))


def open_header_length(cmd_key: bytes, auth_id: bytes, sealed_len: bytes,
                       nonce: bytes, pads: tuple[bytes, bytes, bytes] | None = None) -> int:
    """Open the 18-byte sealed length; HeaderError on a bad tag. ``pads``: the
    :func:`~vtwist.proxy.vmess.kdf.request_pads` of ``auth_id`` and ``nonce`` if known."""
    lk, ln = K.request_length_keys(cmd_key, auth_id, nonce, pads)
    try:
        raw = AESGCM(lk).decrypt(ln, sealed_len, auth_id)
    except InvalidTag:
        raise HeaderError("AEAD header length authentication failed") from None
    return (raw[0] << 8) | raw[1]


def open_header_payload(cmd_key: bytes, auth_id: bytes, nonce: bytes, sealed: bytes,
                        pads: tuple[bytes, bytes, bytes] | None = None) -> bytes:
    """Open the sealed instruction; HeaderError on a bad tag. ``pads`` as for
    :func:`open_header_length`."""
    hk, hn = K.request_payload_keys(cmd_key, auth_id, nonce, pads)
    try:
        return AESGCM(hk).decrypt(hn, sealed, auth_id)
    except InvalidTag:
        raise HeaderError("AEAD header authentication failed") from None


# -- response header -------------------------------------------------------------------

def response_key_iv(body_key: bytes, body_iv: bytes, aead: bool) -> tuple[bytes, bytes]:
    """Response body key and IV: SHA-256[:16] in AEAD header mode, MD5 in legacy mode."""
    if aead:
        return hashlib.sha256(body_key).digest()[:16], hashlib.sha256(body_iv).digest()[:16]
    return hashlib.md5(body_key).digest(), hashlib.md5(body_iv).digest()


def encode_response_plain(v: int, option: int = 0, command: int = 0,
                          command_payload: bytes = b"") -> bytes:
    """V || Opt || CmdID || CmdLen || FNV(payload) || payload (no command: 4 bytes)."""
    if not command:
        return bytes([v, option, 0, 0])
    data = struct.pack(">I", fnv1a_32(command_payload)) + command_payload
    if len(data) > 255:
        raise ValueError("response command too long")
    return bytes([v, option, command, len(data)]) + data


def response_header_keys(resp_key: bytes, resp_iv: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(length key, length nonce, payload key, payload nonce) of the AEAD response header."""
    return K.response_header_keys(resp_key, resp_iv)


def seal_response_header(resp_key: bytes, resp_iv: bytes, plain: bytes) -> bytes:
    """The AEAD response header: sealed BE16 length (18) || sealed plaintext."""
    lk, ln, pk, pn = response_header_keys(resp_key, resp_iv)
    return (AESGCM(lk).encrypt(ln, struct.pack(">H", len(plain)), None)
            + AESGCM(pk).encrypt(pn, plain, None))


@dataclass(frozen=True, slots=True)
class ResponseHeader:
    """A decoded response header; ``command`` is 0 when there is none."""

    v: int
    option: int
    command: int
    command_data: bytes


def parse_response_plain(plain: bytes) -> ResponseHeader:
    """Decode the response plaintext (V, Opt, CmdID, CmdLen, data)."""
    if len(plain) < 4:
        raise HeaderError("response header too short")
    cmd, m = plain[2], plain[3]
    data = bytes(plain[4:4 + m]) if cmd else b""
    if cmd and len(data) < m:
        raise HeaderError("response command truncated")
    return ResponseHeader(plain[0], plain[1], cmd, data)


@dataclass(frozen=True, slots=True)
class SwitchAccount:
    """The SwitchAccount (dynamic port) response command."""

    host: str
    port: int
    uuid: bytes
    alter_ids: int
    level: int
    valid_minutes: int


def parse_command(command: int, data: bytes) -> SwitchAccount | None:
    """Parse a response command; None when unknown, short or failing its FNV check."""
    if command != CMD_SWITCH_ACCOUNT or len(data) < 4:
        return None
    payload = data[4:]
    if int.from_bytes(data[:4], "big") != fnv1a_32(payload):
        return None
    if not payload:
        return None
    hl = payload[0]
    rest = payload[1 + hl:]
    if len(payload) < 1 + hl or len(rest) < 22:
        return None
    host = payload[1:1 + hl].decode("ascii", "replace")
    port = (rest[0] << 8) | rest[1]
    return SwitchAccount(host, port, bytes(rest[2:18]), (rest[18] << 8) | rest[19],
                         rest[20], rest[21])


def encode_switch_account(cmd: SwitchAccount) -> bytes:
    """The SwitchAccount payload (without the FNV prefix)."""
    host = cmd.host.encode("ascii")
    return (bytes([len(host)]) + host + struct.pack(">H", cmd.port) + cmd.uuid
            + struct.pack(">HBB", cmd.alter_ids, cmd.level & 0xFF, cmd.valid_minutes))
