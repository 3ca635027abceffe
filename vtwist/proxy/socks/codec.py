"""Sans-IO SOCKS server codec: SOCKS5 (RFC 1928, RFC 1929 auth) and SOCKS4/4a.

In the style of h11/wsproto: feed the client's bytes to :meth:`ServerCodec.receive_data`, which
returns the events they complete (:class:`Greeting`, :class:`Credentials`, :class:`Request`;
an empty list means "feed more"); answer each with :meth:`ServerCodec.send`
(:class:`MethodChoice`, :class:`AuthResult`, :class:`Reply`), which returns the bytes to write.
All of these subclass :class:`vtwist.sansio.Event`. Malformed input raises
:class:`ProtocolError`, whose ``reply`` holds the bytes (possibly empty) to write before
closing. After a successful :class:`Reply`, :meth:`ServerCodec.take_trailing_data` hands over
bytes the client sent early (its first payload), and the codec has no more to do.

Policy (which auth method, whether an account is valid, which commands are served) is the
caller's: the codec only speaks the wire format. No I/O, no reactor.

Also here: the UDP ASSOCIATE datagram header and small client-side encoders (used by tests and
by anything that speaks SOCKS as a client). Decoders of a possibly incomplete prefix
(:func:`decode_address`, :func:`parse_reply`, :func:`parse_reply4`) answer
:data:`~vtwist.sansio.NEED_DATA` until it is complete.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import Enum, IntEnum

from vtwist.address import Destination, is_valid_domain, parse_ip
from vtwist.sansio import NEED_DATA, Event, NeedData

SOCKS4 = 4
SOCKS5 = 5

METHOD_NO_AUTH = 0x00
METHOD_PASSWORD = 0x02
METHOD_NO_ACCEPTABLE = 0xFF

CMD_CONNECT = 0x01
CMD_BIND = 0x02
CMD_UDP_ASSOCIATE = 0x03

ATYP_IPV4 = 0x01
ATYP_DOMAIN = 0x03
ATYP_IPV6 = 0x04

SOCKS4_GRANTED = 90
SOCKS4_REJECTED = 91

#: Longest SOCKS4 user id / SOCKS4a domain accepted (both are NUL-terminated, unbounded on
#: the wire). V2Ray stops at its 2 KiB buffer; a domain never exceeds 255 bytes.
MAX_SOCKS4_USERID = 1024
MAX_SOCKS4_DOMAIN = 255

_PORT = struct.Struct("!H")


class ReplyCode(IntEnum):
    """SOCKS5 reply codes (RFC 1928 section 6)."""

    SUCCEEDED = 0x00
    GENERAL_FAILURE = 0x01
    NOT_ALLOWED = 0x02
    NETWORK_UNREACHABLE = 0x03
    HOST_UNREACHABLE = 0x04
    CONNECTION_REFUSED = 0x05
    TTL_EXPIRED = 0x06
    COMMAND_NOT_SUPPORTED = 0x07
    ADDRESS_TYPE_NOT_SUPPORTED = 0x08


# -- events -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Greeting(Event):
    """SOCKS5 client greeting: the authentication methods it offers."""

    methods: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Credentials(Event):
    """RFC 1929 username/password sub-negotiation."""

    username: bytes
    password: bytes


@dataclass(frozen=True, slots=True)
class Request(Event):
    """A SOCKS4/4a/5 request. ``host`` is an IP literal (no brackets) or a domain."""

    version: int
    command: int
    host: str
    port: int
    userid: bytes = b""  # SOCKS4 only

    @property
    def destination(self) -> Destination:
        """The target as a :class:`Destination` (udp for UDP ASSOCIATE)."""
        if self.command == CMD_UDP_ASSOCIATE:
            return Destination.udp(self.host, self.port)
        return Destination.tcp(self.host, self.port)


@dataclass(frozen=True, slots=True)
class MethodChoice(Event):
    """Server: the chosen method (``METHOD_NO_ACCEPTABLE`` refuses and ends the session)."""

    method: int


@dataclass(frozen=True, slots=True)
class AuthResult(Event):
    """Server: the RFC 1929 verdict (a failure ends the session)."""

    success: bool


@dataclass(frozen=True, slots=True)
class Reply(Event):
    """Server: the answer to a request. For SOCKS4 any non-zero code means "rejected"."""

    code: int
    host: str = "0.0.0.0"
    port: int = 0


class ProtocolError(Exception):
    """The client broke the protocol; write ``reply`` (maybe empty), then close."""

    def __init__(self, message: str, reply: bytes = b"") -> None:
        super().__init__(message)
        self.reply = reply


class LocalProtocolError(Exception):
    """The server side called :meth:`ServerCodec.send` with an event out of turn."""


class State(Enum):
    """Where a :class:`ServerCodec` is in the handshake."""

    GREETING = "greeting"            # waiting for the client's first bytes
    METHOD = "method"                # server must send MethodChoice
    CREDENTIALS = "credentials"      # waiting for username/password
    AUTH_RESULT = "auth-result"      # server must send AuthResult
    REQUEST = "request"              # waiting for the SOCKS5 request
    REPLY = "reply"                  # server must send Reply
    ESTABLISHED = "established"      # handshake done; payload bytes follow
    CLOSED = "closed"                # refused or broken: close the connection


_GREETING, _CREDENTIALS, _REQUEST = State.GREETING, State.CREDENTIALS, State.REQUEST


# -- addresses ----------------------------------------------------------------------------
class AddressError(Exception):
    """An address that cannot be decoded; ``code`` is the SOCKS5 reply to send."""

    def __init__(self, message: str, code: ReplyCode) -> None:
        super().__init__(message)
        self.code = code


#: IP literal -> its ATYP and address bytes (a reply's BND.ADDR is nearly always the same
#: few local addresses); cleared when it holds :data:`_IP_CACHE_SIZE` of them
_ENCODED_IPS: dict[str, bytes] = {}
_IP_CACHE_SIZE = 1024


def encode_address(host: str, port: int) -> bytes:
    """ATYP, address and port for ``host`` (IPv4, IPv6 or a domain of at most 255 bytes)."""
    head = _ENCODED_IPS.get(host)
    if head is not None:
        return head + _PORT.pack(port)
    ip = parse_ip(host)
    if ip is not None:
        head = (b"\x01" if isinstance(ip, ipaddress.IPv4Address) else b"\x04") + ip.packed
        if len(_ENCODED_IPS) >= _IP_CACHE_SIZE:
            _ENCODED_IPS.clear()
        _ENCODED_IPS[host] = head
        return head + _PORT.pack(port)
    name = host.encode("idna") if not host.isascii() else host.encode("ascii")
    if not 0 < len(name) <= 255:
        raise ValueError(f"domain length must be 1-255 bytes, got {len(name)}")
    return bytes((ATYP_DOMAIN, len(name))) + name + _PORT.pack(port)


def decode_address(data: bytes | bytearray | memoryview, offset: int = 0
                   ) -> tuple[str, int, int] | NeedData:
    """Decode ATYP/address/port at ``offset``: ``(host, port, end)``, or NEED_DATA.

    Raises :class:`AddressError` for an unknown address type or an invalid domain. A domain
    that spells an IP literal becomes that IP, as in V2Ray.
    """
    n = len(data)
    if offset >= n:
        return NEED_DATA
    atyp = data[offset]
    if atyp == ATYP_IPV4:
        end = offset + 7
        if n < end:
            return NEED_DATA
        host = "%d.%d.%d.%d" % tuple(data[offset + 1:offset + 5])  # as str(IPv4Address)
    elif atyp == ATYP_IPV6:
        end = offset + 19
        if n < end:
            return NEED_DATA
        ip6 = ipaddress.IPv6Address(bytes(data[offset + 1:offset + 17]))
        host = str(ip6.ipv4_mapped) if ip6.ipv4_mapped is not None else str(ip6)
    elif atyp == ATYP_DOMAIN:
        if n < offset + 2:
            return NEED_DATA
        length = data[offset + 1]
        end = offset + 2 + length + 2
        if n < end:
            return NEED_DATA
        host = _domain(bytes(data[offset + 2:offset + 2 + length]))
    else:
        raise AddressError(f"unsupported address type {atyp}",
                           ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED)
    port = (data[end - 2] << 8) | data[end - 1]
    return host, port, end


def _domain(raw: bytes) -> str:
    """A wire domain as a host string: IP literals normalised, else V2Ray's character set."""
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError:
        raise AddressError("domain is not ASCII", ReplyCode.GENERAL_FAILURE) from None
    ip = parse_ip(name)
    if ip is not None:
        return str(ip.ipv4_mapped) if isinstance(ip, ipaddress.IPv6Address) and \
            ip.ipv4_mapped is not None else str(ip)
    if not is_valid_domain(name):
        raise AddressError(f"invalid domain name {name!r}", ReplyCode.GENERAL_FAILURE)
    return name


# -- the server codec --------------------------------------------------------------------
class ServerCodec:
    """One server-side SOCKS handshake, sans-IO."""

    def __init__(self, allow_socks4: bool = True) -> None:
        self.state = State.GREETING
        self.version: int | None = None
        self.allow_socks4 = allow_socks4
        #: bytes received and not read yet: when the server's answer moved the handshake
        #: on and this is not empty, :meth:`receive_data` with no new bytes reads them (the
        #: client pipelined its next message)
        self.buffer = bytearray()
        self._method = METHOD_NO_AUTH

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Greeting | Credentials | Request]:
        """Take bytes from the client; return the events they complete (often none)."""
        self.buffer += data
        events: list[Greeting | Credentials | Request] = []
        while True:
            state = self.state
            if state is _REQUEST:
                event = self._request5()
            elif state is _GREETING:
                event = self._greeting()
            elif state is _CREDENTIALS:
                event = self._credentials()
            else:  # the server must answer first, or the handshake is over
                return events
            if event is NEED_DATA:
                return events
            events.append(event)

    def take_trailing_data(self) -> bytes:
        """Bytes received after the handshake (only meaningful once ESTABLISHED)."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def _fail(self, message: str, reply: bytes = b"") -> ProtocolError:
        self.state = State.CLOSED
        self.buffer.clear()
        return ProtocolError(message, reply)

    def _greeting(self) -> Greeting | Request | NeedData:
        buf = self.buffer
        if len(buf) < 2:
            if buf and buf[0] not in (SOCKS4, SOCKS5):
                raise self._fail(f"unknown SOCKS version {buf[0]}")
            return NEED_DATA
        version = buf[0]
        if version == SOCKS5:
            nmethods = buf[1]
            if nmethods == 0:
                raise self._fail("SOCKS5 greeting offers no methods",
                                 bytes((SOCKS5, METHOD_NO_ACCEPTABLE)))
            if len(buf) < 2 + nmethods:
                return NEED_DATA
            methods = tuple(buf[2:2 + nmethods])
            del buf[:2 + nmethods]
            self.version = SOCKS5
            self.state = State.METHOD
            return Greeting(methods)
        if version == SOCKS4 and self.allow_socks4:
            return self._request4()
        raise self._fail(f"unknown SOCKS version {version}")

    def _request4(self) -> Request | NeedData:
        buf = self.buffer
        reject = _socks4_reply(SOCKS4_REJECTED)
        if len(buf) < 9:
            return NEED_DATA
        userid_end = buf.find(b"\x00", 8, 8 + MAX_SOCKS4_USERID + 1)
        if userid_end < 0:
            if len(buf) > 8 + MAX_SOCKS4_USERID:
                raise self._fail("SOCKS4 user id too long", reject)
            return NEED_DATA
        command = buf[1]
        port = (buf[2] << 8) | buf[3]
        end = userid_end + 1
        if buf[4] == 0:  # SOCKS4a (V2Ray's test: first octet zero): a domain follows
            domain_end = buf.find(b"\x00", end, end + MAX_SOCKS4_DOMAIN + 1)
            if domain_end < 0:
                if len(buf) > end + MAX_SOCKS4_DOMAIN:
                    raise self._fail("SOCKS4a domain too long", reject)
                return NEED_DATA
            try:
                host = _domain(bytes(buf[end:domain_end]))
            except AddressError as e:
                raise self._fail(f"SOCKS4a: {e}", reject) from None
            end = domain_end + 1
        else:
            host = str(ipaddress.IPv4Address(bytes(buf[4:8])))
        userid = bytes(buf[8:userid_end])
        del buf[:end]
        self.version = SOCKS4
        self.state = State.REPLY
        return Request(SOCKS4, command, host, port, userid)

    def _credentials(self) -> Credentials | NeedData:
        buf = self.buffer
        if len(buf) < 2:
            return NEED_DATA
        if buf[0] != 0x01:
            raise self._fail(f"unknown username/password version {buf[0]}", b"\x01\x01")
        ulen = buf[1]
        if len(buf) < 3 + ulen:
            return NEED_DATA
        plen = buf[2 + ulen]
        end = 3 + ulen + plen
        if len(buf) < end:
            return NEED_DATA
        username = bytes(buf[2:2 + ulen])
        password = bytes(buf[3 + ulen:end])
        del buf[:end]
        self.state = State.AUTH_RESULT
        return Credentials(username, password)

    def _request5(self) -> Request | NeedData:
        buf = self.buffer
        if len(buf) < 4:
            return NEED_DATA
        if buf[0] != SOCKS5:
            raise self._fail(f"SOCKS5 request with version {buf[0]}",
                             _socks5_reply(ReplyCode.GENERAL_FAILURE))
        # buf[2] is reserved; like V2Ray, its value is not checked.
        command = buf[1]
        try:
            decoded = decode_address(buf, 3)
        except AddressError as e:
            raise self._fail(str(e), _socks5_reply(e.code)) from None
        if decoded is NEED_DATA:
            return NEED_DATA
        host, port, end = decoded
        del buf[:end]
        self.state = State.REPLY
        return Request(SOCKS5, command, host, port)

    # -- output --------------------------------------------------------------------------
    def send(self, event: MethodChoice | AuthResult | Reply) -> bytes:
        """Bytes for a server event; moves the handshake on."""
        if isinstance(event, MethodChoice):
            return self.choose_method(event.method)
        if isinstance(event, AuthResult):
            return self.auth_result(event.success)
        if isinstance(event, Reply):
            return self.reply(event.code, event.host, event.port)
        raise LocalProtocolError(
            f"cannot send {type(event).__name__} in state {self.state.value}")

    def choose_method(self, method: int) -> bytes:
        """:class:`MethodChoice` without the event object: the bytes choosing ``method``."""
        if self.state is not State.METHOD:
            raise LocalProtocolError(f"cannot send MethodChoice in state {self.state.value}")
        self._method = method
        if method == METHOD_NO_AUTH:
            self.state = State.REQUEST
            return _CHOSE_NO_AUTH
        if method == METHOD_NO_ACCEPTABLE:
            self._close()
        elif method == METHOD_PASSWORD:
            self.state = State.CREDENTIALS
        else:
            raise LocalProtocolError(f"method {method} is not implemented")
        return bytes((SOCKS5, method))

    def auth_result(self, success: bool) -> bytes:
        """:class:`AuthResult` without the event object: the RFC 1929 verdict's bytes."""
        if self.state is not State.AUTH_RESULT:
            raise LocalProtocolError(f"cannot send AuthResult in state {self.state.value}")
        if success:
            self.state = State.REQUEST
            return b"\x01\x00"
        self._close()
        return b"\x01\x01"

    def reply(self, code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
        """:class:`Reply` without the event object: the answer to the request."""
        if self.state is not State.REPLY:
            raise LocalProtocolError(f"cannot send Reply in state {self.state.value}")
        if code == 0:  # ReplyCode.SUCCEEDED
            self.state = State.ESTABLISHED
        else:
            self._close()
        if self.version == SOCKS4:
            return _socks4_reply(SOCKS4_GRANTED if code == 0 else SOCKS4_REJECTED, host, port)
        head = _ENCODED_IPS.get(host)  # (_socks5_reply, inline)
        if head is not None:
            return _REPLY_HEADS[code] + head + _PORT.pack(port)
        return _REPLY_HEADS[code] + encode_address(host, port)

    def _close(self) -> None:
        self.state = State.CLOSED
        self.buffer.clear()


_CHOSE_NO_AUTH = bytes((SOCKS5, METHOD_NO_AUTH))
#: a SOCKS5 reply's first three bytes, by reply code
_REPLY_HEADS = tuple(bytes((SOCKS5, code, 0)) for code in range(256))


def _socks5_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    head = _ENCODED_IPS.get(host)  # (a reply names the same few local addresses)
    if head is not None:
        return _REPLY_HEADS[code] + head + _PORT.pack(port)
    return _REPLY_HEADS[code] + encode_address(host, port)


def _socks4_reply(code: int, host: str = "0.0.0.0", port: int = 0) -> bytes:
    ip = parse_ip(host)
    packed = ip.packed if isinstance(ip, ipaddress.IPv4Address) else b"\x00\x00\x00\x00"
    return bytes((0, code)) + _PORT.pack(port) + packed


# -- UDP ASSOCIATE datagrams ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Datagram:
    """One SOCKS5 UDP datagram: fragment number, target (or source) and payload."""

    frag: int
    host: str
    port: int
    payload: bytes


def parse_datagram(data: bytes) -> Datagram:
    """Decode a client's UDP datagram. Raises :class:`ProtocolError` if malformed."""
    if len(data) < 4:
        raise ProtocolError("UDP datagram too short")
    try:
        decoded = decode_address(data, 3)
    except AddressError as e:
        raise ProtocolError(f"UDP datagram: {e}") from None
    if decoded is NEED_DATA:
        raise ProtocolError("UDP datagram header truncated")
    host, port, end = decoded
    return Datagram(data[2], host, port, data[end:])


def build_datagram(host: str, port: int, payload: bytes) -> bytes:
    """Encode a UDP datagram (FRAG 0) carrying ``payload`` from/to ``host:port``."""
    return b"\x00\x00\x00" + encode_address(host, port) + payload


# -- client-side encoders and decoders ----------------------------------------------------
def client_greeting(methods: tuple[int, ...] = (METHOD_NO_AUTH,)) -> bytes:
    """A SOCKS5 greeting offering ``methods``."""
    return bytes((SOCKS5, len(methods))) + bytes(methods)


def client_credentials(username: bytes, password: bytes) -> bytes:
    """An RFC 1929 username/password message."""
    return bytes((1, len(username))) + username + bytes((len(password),)) + password


def client_request(command: int, host: str, port: int) -> bytes:
    """A SOCKS5 request."""
    return bytes((SOCKS5, command, 0)) + encode_address(host, port)


def client_request4(command: int, host: str, port: int, userid: bytes = b"") -> bytes:
    """A SOCKS4 request, or SOCKS4a when ``host`` is a domain."""
    ip = parse_ip(host)
    head = bytes((SOCKS4, command)) + _PORT.pack(port)
    if isinstance(ip, ipaddress.IPv4Address):
        return head + ip.packed + userid + b"\x00"
    return head + b"\x00\x00\x00\x01" + userid + b"\x00" + host.encode("ascii") + b"\x00"


def parse_reply(data: bytes) -> tuple[int, str, int, int] | NeedData:
    """Decode a SOCKS5 reply: ``(code, host, port, length)``, or NEED_DATA if incomplete."""
    if len(data) < 4:
        return NEED_DATA
    decoded = decode_address(data, 3)
    if decoded is NEED_DATA:
        return NEED_DATA
    host, port, end = decoded
    return data[1], host, port, end


def parse_reply4(data: bytes) -> tuple[int, str, int] | NeedData:
    """Decode a SOCKS4 reply: ``(code, host, port)``, or NEED_DATA if incomplete."""
    if len(data) < 8:
        return NEED_DATA
    return data[1], str(ipaddress.IPv4Address(data[4:8])), (data[2] << 8) | data[3]
