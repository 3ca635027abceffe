"""Sans-IO VMess handshakes.

Server: :class:`ServerHandshake` is fed the bytes of a new connection with the current
wall-clock time and answers :data:`~vtwist.sansio.NEED_DATA`, :class:`RequestParsed` or
:class:`Rejected`.

Client: :class:`ClientSession` builds the request header (for a given time) and the body
codecs, and decodes the response header.

No clock is read here: VMess timestamps are wall-clock seconds, which the caller passes as
``now`` (``time.time()`` at the Twisted edge, a fixed value in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vtwist.address import Destination
from vtwist.entropy import random_bytes
from vtwist.entropy import random_bytes as _pool_bytes
from vtwist.proxy.vmess import header as H
from vtwist.proxy.vmess import kdf as K
from vtwist.proxy.vmess import legacy as L
from vtwist.proxy.vmess.body import (
    DEFAULT_SEND_CHUNK,
    OPT_CHUNK_MASKING,
    OPT_CHUNK_STREAM,
    OPT_GLOBAL_PADDING,
    SEC_LEGACY,
    SEC_NONE,
    BodyDecoder,
    BodyEncoder,
    BodyError,
    aes_cfb,
    check_options,
    padding_bytes,
)
from vtwist.proxy.vmess.replay import AuthIDFilter, SessionHistory
from vtwist.proxy.vmess.users import Account, UserTable, resolve_security
from vtwist.sansio import NEED_DATA, Event, NeedData


@dataclass(frozen=True, slots=True)
class RequestParsed(Event):
    """A valid request: who sent it, what it asks for, and the first body bytes."""

    account: Account
    header: H.RequestHeader
    aead: bool
    leftover: bytes
    response_key: bytes
    response_iv: bytes

    @property
    def destination(self) -> Destination:
        """Where the client wants to go."""
        return self.header.destination

    @property
    def command(self) -> int:
        """CMD_TCP, CMD_UDP or CMD_MUX."""
        return self.header.command

    @property
    def security(self) -> int:
        """The body security value."""
        return self.header.security

    @property
    def option(self) -> int:
        """The option bits."""
        return self.header.option

    def body_decoder(self) -> BodyDecoder:
        """Decoder for the request body (client -> server)."""
        h = self.header
        return BodyDecoder(h.security, h.option, h.body_key, h.body_iv,
                           packet=h.command == H.CMD_UDP)

    def response_writer(self, random_bytes: Callable[[int], bytes] = padding_bytes,
                        command: int = 0, command_payload: bytes = b"",
                        chunk_size: int = DEFAULT_SEND_CHUNK
                        ) -> tuple[bytes, BodyEncoder]:
        """(response header bytes, encoder for the response body); ``command`` (e.g.
        ``CMD_SWITCH_ACCOUNT`` with its payload) rides in the response header.

        Response chunks are up to ``chunk_size`` bytes (16 KiB by default: every client's
        reader accepts them, see :data:`~vtwist.proxy.vmess.body.MAX_SEND_CHUNK`); UDP
        responses keep V2Ray's 2048."""
        h = self.header
        plain = H.encode_response_plain(h.response_v, 0, command, command_payload)
        cfb = None
        if self.aead:
            wire = H.seal_response_header(self.response_key, self.response_iv, plain)
        else:
            wire, enc = L.seal_legacy_response(self.response_key, self.response_iv, plain)
            if h.security == SEC_LEGACY:
                cfb = enc
        encoder = BodyEncoder(h.security, h.option, self.response_key, self.response_iv,
                              packet=h.command == H.CMD_UDP, random_bytes=random_bytes,
                              cfb=cfb, chunk_size=chunk_size)
        return wire, encoder


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """A request that must not be answered.

    ``drain`` says whether V2Ray 4.34 would drain (True) or close at once (False);
    ``consumed`` is how many bytes were read before the decision.
    """

    reason: str
    drain: bool
    consumed: int
    account: Account | None = None


# Where a :class:`ServerHandshake` is (plain ints: compared on every feed).
_AUTH = 0        # waiting for the 16-byte AuthID (or legacy auth)
_AEAD_LEN = 1    # waiting for the sealed length and nonce
_AEAD_BODY = 2   # waiting for the sealed instruction
_LEGACY = 3      # decrypting a legacy (CFB) instruction
_DONE = 4        # decided


class ServerHandshake:
    """Decodes one request header (AEAD first, then legacy) with replay protection.

    Sans-IO: :meth:`feed` takes the bytes and the current wall-clock time in seconds.
    """

    def __init__(self, users: UserTable, auth_filter: AuthIDFilter,
                 sessions: SessionHistory) -> None:
        self.users = users
        self.auth_filter = auth_filter
        self.sessions = sessions
        #: what arrived while the header was incomplete (the first bytes are not copied
        #: here when they complete it at once)
        self._buf = bytearray()
        self._src = b""  # every byte received so far, while a feed is decided
        self._state = _AUTH
        self._account: Account | None = None
        self._auth_id = b""
        self._timestamp = 0
        self._length = 0
        self._pads: tuple[bytes, bytes, bytes] | None = None  # the KDF pads of AuthID/nonce
        self._legacy_dec = None
        self._legacy_plain = bytearray()
        self._legacy_used = 0  # ciphertext bytes decrypted after the auth

    @property
    def buffered(self) -> int:
        """Bytes received so far."""
        return len(self._buf)

    def feed(self, data: bytes, now: float) -> NeedData | RequestParsed | Rejected:
        """Add bytes received at ``now`` (wall-clock seconds); returns the verdict so far.

        Call again only after :data:`~vtwist.sansio.NEED_DATA`.
        """
        if self._state == _DONE:
            raise RuntimeError("handshake already decided")
        buf = self._buf
        if buf:
            buf += data
            src = self._src = bytes(buf)
        else:
            src = self._src = bytes(data)
        result = self._step(src, now)
        if result is NEED_DATA:
            if not buf:
                buf += src
        else:
            self._state = _DONE
        return result

    def _reject(self, reason: str, drain: bool) -> Rejected:
        return Rejected(reason, drain, len(self._src), self._account)

    def _step(self, buf: bytes, now: float) -> NeedData | RequestParsed | Rejected:
        state = self._state
        if state == _AUTH:
            if len(buf) < 16:
                return NEED_DATA
            auth = buf[:16]
            self._auth_id = auth
            users = self.users
            m = users.match_aead(auth, now)
            if m is not None and m.in_window:
                self._account = users.accounts[m.user_index]
                self._timestamp = m.timestamp
                if not self.auth_filter.check_and_add(auth, m.timestamp, now):
                    return self._reject(f"replayed AuthID for user {self._account.label}", True)
                state = self._state = _AEAD_LEN
            else:
                lm = users.match_legacy(auth, now)
                if lm is None:
                    if m is not None:
                        acct = users.accounts[m.user_index]
                        self._account = acct
                        return self._reject(
                            f"clock skew of {m.skew:+.0f} s for user {acct.label}", True)
                    return self._reject("unknown user (no AEAD or legacy auth matched)", True)
                self._account = users.accounts[lm.user_index]
                self._timestamp = lm.timestamp
                self._legacy_dec = L.header_decryptor(self._account.cmd_key, lm.timestamp)
                state = self._state = _LEGACY
        if state == _AEAD_LEN:
            if len(buf) < 42:
                return NEED_DATA
            acct = self._account
            pads = self._pads = K.request_pads(self._auth_id, buf[34:42])
            try:
                self._length = H.open_header_length(acct.cmd_key, self._auth_id, buf[16:34],
                                                    buf[34:42], pads)
            except H.HeaderError as e:
                return self._reject(f"{e.reason} for user {acct.label}", True)
            state = self._state = _AEAD_BODY
        if state == _AEAD_BODY:
            end = 42 + self._length + 16
            if len(buf) < end:
                return NEED_DATA
            acct = self._account
            try:
                plain = H.open_header_payload(acct.cmd_key, self._auth_id, buf[34:42],
                                              buf[42:end], self._pads)
            except H.HeaderError as e:
                return self._reject(f"{e.reason} for user {acct.label}", True)
            return self._finish_aead(plain, buf[end:], now)
        if state == _LEGACY:
            return self._step_legacy(buf, now)
        return NEED_DATA

    def _finish_aead(self, plain: bytes, leftover: bytes, now: float
                     ) -> RequestParsed | Rejected:
        acct = self._account
        try:
            need = H.instruction_needed(plain)
        except H.HeaderError as e:
            return self._reject(f"{e.reason} from user {acct.label}", False)
        if len(plain) < need:
            return self._reject(f"AEAD header too short from user {acct.label}", False)
        return self._finish(plain[:need] if len(plain) > need else plain, leftover, True, now)

    def _step_legacy(self, buf: bytes, now: float) -> NeedData | RequestParsed | Rejected:
        acct = self._account
        plain = self._legacy_plain
        while True:
            try:
                need = H.instruction_needed(plain)
            except H.HeaderError as e:
                return self._reject(f"{e.reason} from user {acct.label} (legacy)", False)
            if len(plain) >= need:
                break
            avail = len(buf) - 16 - self._legacy_used
            take = min(avail, need - len(plain))
            if take <= 0:
                return NEED_DATA
            start = 16 + self._legacy_used
            plain += self._legacy_dec.update(buf[start:start + take])
            self._legacy_used += take
        leftover = buf[16 + self._legacy_used:]
        return self._finish(bytes(plain), leftover, False, now)

    def _finish(self, plain: bytes, leftover: bytes, aead: bool, now: float
                ) -> RequestParsed | Rejected:
        acct = self._account
        mode = "" if aead else " (legacy)"
        key, iv = plain[17:33], plain[1:17]
        if not self.sessions.check_and_add((acct.uuid, key, iv), now):
            if not aead:
                self.users.taint_legacy(self._auth_id)
            return self._reject(f"duplicate session for user {acct.label}{mode}", not aead)
        if not H.checksum_ok(plain):
            if not aead:
                self.users.taint_legacy(self._auth_id)
            return self._reject(f"header checksum mismatch for user {acct.label}{mode}",
                                not aead)
        try:
            req = H.parse_instruction(plain)
            check_options(req.security, req.option)
        except H.HeaderError as e:
            return self._reject(f"{e.reason} from user {acct.label}{mode}", False)
        except BodyError as e:
            return self._reject(f"{e} from user {acct.label}{mode}", False)
        rk, riv = H.response_key_iv(req.body_key, req.body_iv, aead)
        return RequestParsed(acct, req, aead, leftover, rk, riv)


def default_option(security: int) -> int:
    """Option bits a 4.34 client sends for a security value."""
    if security == SEC_NONE:
        return OPT_CHUNK_STREAM | OPT_CHUNK_MASKING
    if security == SEC_LEGACY:
        return OPT_CHUNK_STREAM
    return OPT_CHUNK_STREAM | OPT_CHUNK_MASKING | OPT_GLOBAL_PADDING


class ClientSession:
    """Client state for one VMess connection: request header, body codecs, response.

    Random values (key, IV, V, padding, AuthID random, nonce, legacy jitter and ID choice)
    can be injected for tests; by default they come from ``os.urandom`` (through
    :data:`vtwist.entropy.random_bytes`, without a system call each). ``address``: the
    destination as :func:`~vtwist.proxy.vmess.header.encode_address` gives it, when the
    caller has it already.
    """

    __slots__ = ("account", "destination", "command", "security", "option", "aead",
                 "body_key", "body_iv", "response_v", "header_padding", "random_bytes",
                 "response_key", "response_iv", "response", "_address", "_resp_buf",
                 "_resp_keys", "_resp_len")

    def __init__(self, account: Account, destination: Destination, command: int = H.CMD_TCP,
                 security: int | None = None, option: int | None = None,
                 aead: bool | None = None, body_key: bytes | None = None,
                 body_iv: bytes | None = None, response_v: int | None = None,
                 header_padding: bytes | None = None,
                 random_bytes: Callable[[int], bytes] = random_bytes,
                 address: bytes | None = None) -> None:
        self.account = account
        self.destination = destination
        self.command = command
        self.random_bytes = random_bytes
        if security is None:
            security = resolve_security(account.security)
        if option is None:
            option = default_option(security)
        check_options(security, option)
        self.security = security
        self.option = option
        self.aead = aead = account.alter_id == 0 if aead is None else aead
        if body_key is None or body_iv is None or response_v is None:
            fresh = _pool_bytes(33)  # key, IV and V in one draw from the pool
            body_key = fresh[:16] if body_key is None else body_key
            body_iv = fresh[16:32] if body_iv is None else body_iv
            response_v = fresh[32] if response_v is None else response_v
        self.body_key = body_key
        self.body_iv = body_iv
        self.response_v = response_v
        if header_padding is None:
            header_padding = random_bytes(random_bytes(1)[0] % 16)
        self.header_padding = header_padding
        self._address = address
        self.response_key, self.response_iv = H.response_key_iv(body_key, body_iv, aead)
        self._resp_buf = bytearray()
        self._resp_keys: tuple[bytes, bytes, bytes, bytes] | None = None  # AEAD header keys
        self._resp_len: int | None = None
        self.response: H.ResponseHeader | None = None

    def __repr__(self) -> str:
        return (f"ClientSession(account={self.account!r}, destination={self.destination!r}, "
                f"command={self.command!r}, security={self.security!r}, "
                f"option={self.option!r}, aead={self.aead!r})")

    @property
    def request(self) -> H.RequestHeader:
        """The instruction this session sends."""
        dest = H.MUX_DESTINATION if self.command == H.CMD_MUX else self.destination
        return H.RequestHeader(self.command, dest, self.security, self.option,
                               self.body_key, self.body_iv, self.response_v)

    def instruction(self) -> bytes:
        """The instruction plaintext."""
        command = self.command
        if command == H.CMD_MUX:
            address = b""
        else:
            address = self._address
            if address is None:
                address = self._address = H.encode_address(self.destination)
        return H.instruction_bytes(self.body_iv, self.body_key, self.response_v, self.option,
                                   self.security, command, address, self.header_padding)

    def request_header(self, now: float, *, rand4: bytes | None = None,
                       nonce: bytes | None = None, legacy_timestamp: int | None = None,
                       legacy_id_index: int | None = None) -> bytes:
        """The wire request header (AEAD or legacy by ``self.aead``) sent at ``now``.

        ``now`` is the wall-clock time in seconds (VMess timestamps are Unix seconds).
        """
        if self.aead:
            return H.seal_request_header(self.account.cmd_key, self.instruction(), int(now),
                                         rand4, nonce)
        if legacy_timestamp is None:
            legacy_timestamp = int(now) + (self.random_bytes(1)[0] % 60) - 30
        ids_ = self.account.all_ids()
        if legacy_id_index is None:
            legacy_id_index = int.from_bytes(self.random_bytes(2), "big") % len(ids_)
        return L.seal_legacy_request(ids_[legacy_id_index], self.account.cmd_key,
                                     legacy_timestamp, self.instruction())

    def body_encoder(self, chunk_size: int = DEFAULT_SEND_CHUNK) -> BodyEncoder:
        """Encoder for the request body: chunks of up to ``chunk_size`` bytes (16 KiB by
        default, 2048 = V2Ray's own writer); UDP keeps V2Ray's 2048."""
        rnd = padding_bytes if self.random_bytes is random_bytes else self.random_bytes
        return BodyEncoder(self.security, self.option, self.body_key, self.body_iv,
                           packet=self.command == H.CMD_UDP, random_bytes=rnd,
                           chunk_size=chunk_size)

    def feed_response(self, data: bytes
                      ) -> tuple[H.ResponseHeader, BodyDecoder, bytes] | NeedData:
        """Feed response bytes until the header is complete.

        Returns :data:`~vtwist.sansio.NEED_DATA` while incomplete, then (header, body
        decoder, leftover body bytes).
        Raises HeaderError on a bad tag or a V mismatch.
        """
        buf = self._resp_buf
        if buf:  # (the first bytes are copied only when they leave the header incomplete)
            buf += data
            data = bytes(buf)
        elif type(data) is not bytes:
            data = bytes(data)
        cfb = None
        if self.aead:
            if self._resp_len is None:
                if len(data) < 18:
                    return self._incomplete(data)
                self._resp_keys = H.response_header_keys(self.response_key, self.response_iv)
                lk, ln, _, _ = self._resp_keys
                try:
                    raw = AESGCM(lk).decrypt(ln, data[:18], None)
                except InvalidTag:
                    raise H.HeaderError("response header length authentication failed") from None
                self._resp_len = (raw[0] << 8) | raw[1]
            end = 18 + self._resp_len + 16
            if len(data) < end:
                return self._incomplete(data)
            _, _, pk, pn = self._resp_keys
            try:
                plain = AESGCM(pk).decrypt(pn, data[18:end], None)
            except InvalidTag:
                raise H.HeaderError("response header authentication failed") from None
            leftover = data[end:]
        else:
            if len(data) < 4:
                return self._incomplete(data)
            dec = aes_cfb(self.response_key, self.response_iv, encrypt=False)
            first = dec.update(data[:4])
            m = first[3] if first[2] else 0
            if len(data) < 4 + m:
                return self._incomplete(data)
            plain = first + dec.update(data[4:4 + m])
            leftover = data[4 + m:]
            if self.security == SEC_LEGACY:
                cfb = dec
        resp = H.parse_response_plain(plain)
        if resp.v != self.response_v:
            raise H.HeaderError(
                f"response V mismatch: expected {self.response_v}, got {resp.v}")
        self.response = resp
        decoder = BodyDecoder(self.security, self.option, self.response_key, self.response_iv,
                              packet=self.command == H.CMD_UDP, cfb=cfb)
        return resp, decoder, leftover

    def _incomplete(self, data: bytes) -> NeedData:
        """Keep ``data`` (everything received so far) for the next feed."""
        buf = self._resp_buf
        if not buf:
            buf += data
        return NEED_DATA
