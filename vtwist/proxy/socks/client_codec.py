"""Sans-IO SOCKS5 client codec: the other side of :class:`~vtwist.proxy.socks.codec.ServerCodec`.

The two sides share their events, as in h11: the client *sends* :class:`Greeting`,
:class:`Credentials` and :class:`Request` (:meth:`ClientCodec.send` returns the bytes) and
*receives* :class:`MethodChoice`, :class:`AuthResult` and :class:`Reply`
(:meth:`ClientCodec.receive_data` buffers the server's bytes, :meth:`ClientCodec.next_event`
returns the next complete event or :data:`~vtwist.sansio.NEED_DATA`). A SOCKS5 client's
handshake, as V2Ray 4.34's ``ClientHandshake`` runs it::

    send(Greeting((method,)))      -> MethodChoice   (the method offered, or 0xFF)
    send(Credentials(user, pass))  -> AuthResult     (only with METHOD_PASSWORD)
    send(Request(5, cmd, host, port)) -> Reply       (code 0: established)

:meth:`ClientCodec.establish` drives that sequence for the caller: feed it the server's bytes,
it answers the bytes to write and, once done, the :class:`Reply`. A failure :class:`Reply` is
returned as soon as its first three bytes arrive (V2Ray reads no further either); a server that
breaks the protocol (wrong version, a method not offered, an unknown address type) raises
:class:`~vtwist.proxy.socks.codec.ProtocolError`. After a successful Reply,
:meth:`ClientCodec.take_trailing_data` hands over bytes the server sent early.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from vtwist.proxy.socks.codec import (
    CMD_CONNECT,
    METHOD_NO_ACCEPTABLE,
    METHOD_NO_AUTH,
    METHOD_PASSWORD,
    SOCKS5,
    AddressError,
    AuthResult,
    Credentials,
    Greeting,
    LocalProtocolError,
    MethodChoice,
    ProtocolError,
    Reply,
    ReplyCode,
    Request,
    client_credentials,
    client_greeting,
    client_request,
    decode_address,
)
from vtwist.sansio import NEED_DATA, NeedData


class ClientState(Enum):
    """Where a :class:`ClientCodec` is in the handshake."""

    GREETING = "greeting"          # client must send Greeting
    METHOD = "method"              # waiting for the server's MethodChoice
    CREDENTIALS = "credentials"    # client must send Credentials
    AUTH_RESULT = "auth-result"    # waiting for the AuthResult
    REQUEST = "request"            # client must send Request
    REPLY = "reply"                # waiting for the Reply
    ESTABLISHED = "established"    # payload bytes follow
    CLOSED = "closed"              # refused or broken: close the connection


def reply_name(code: int) -> str:
    """``"connection refused (5)"`` for a SOCKS5 reply code; unknown codes by number."""
    try:
        return f"{ReplyCode(code).name.lower().replace('_', ' ')} ({code})"
    except ValueError:
        return f"unknown reply code {code}"


class ClientCodec:
    """One client-side SOCKS5 handshake, sans-IO."""

    def __init__(self) -> None:
        self.state = ClientState.GREETING
        self.methods: tuple[int, ...] = ()
        self.method: int | None = None
        self._buf = bytearray()

    # -- output --------------------------------------------------------------------------
    def send(self, event: Greeting | Credentials | Request) -> bytes:
        """Bytes for a client event; moves the handshake on."""
        state = self.state
        if isinstance(event, Greeting) and state is ClientState.GREETING:
            if not event.methods or len(event.methods) > 255:
                raise LocalProtocolError("a greeting offers 1-255 methods")
            self.methods = event.methods
            self.state = ClientState.METHOD
            return client_greeting(event.methods)
        if isinstance(event, Credentials) and state is ClientState.CREDENTIALS:
            if len(event.username) > 255 or len(event.password) > 255:
                raise LocalProtocolError("user name and password are at most 255 bytes each")
            self.state = ClientState.AUTH_RESULT
            return client_credentials(event.username, event.password)
        if isinstance(event, Request) and state is ClientState.REQUEST:
            if event.version != SOCKS5:
                raise LocalProtocolError("the client codec speaks SOCKS5 only")
            try:
                data = client_request(event.command, event.host, event.port)
            except ValueError as e:
                raise LocalProtocolError(f"cannot encode {event.host!r}: {e}") from None
            self.state = ClientState.REPLY
            return data
        raise LocalProtocolError(f"cannot send {type(event).__name__} in state {state.value}")

    # -- input ---------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> None:
        """Take bytes from the server (call :meth:`next_event` to read what they complete)."""
        if self.state is not ClientState.CLOSED:
            self._buf += data

    def next_event(self) -> MethodChoice | AuthResult | Reply | NeedData:
        """The next event from the server, or NEED_DATA (also when it is the client's turn)."""
        state = self.state
        if state is ClientState.METHOD:
            return self._method_choice()
        if state is ClientState.AUTH_RESULT:
            return self._auth_result()
        if state is ClientState.REPLY:
            return self._reply()
        return NEED_DATA

    def take_trailing_data(self) -> bytes:
        """Bytes received after the Reply (only meaningful once ESTABLISHED)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def _fail(self, message: str) -> ProtocolError:
        self.state = ClientState.CLOSED
        self._buf.clear()
        return ProtocolError(message)

    def _method_choice(self) -> MethodChoice | NeedData:
        buf = self._buf
        if len(buf) < 2:
            return NEED_DATA
        if buf[0] != SOCKS5:
            raise self._fail(f"unexpected server version {buf[0]}")
        method = buf[1]
        del buf[:2]
        if method == METHOD_NO_ACCEPTABLE:
            self.state = ClientState.CLOSED
            self._buf.clear()
        elif method not in self.methods:
            raise self._fail(f"server chose method {method}, which was not offered")
        elif method == METHOD_PASSWORD:
            self.state = ClientState.CREDENTIALS
        elif method == METHOD_NO_AUTH:
            self.state = ClientState.REQUEST
        else:
            raise self._fail(f"method {method} is not implemented")
        self.method = method
        return MethodChoice(method)

    def _auth_result(self) -> AuthResult | NeedData:
        buf = self._buf
        if len(buf) < 2:
            return NEED_DATA
        # V2Ray checks only the status byte (RFC 1929's version byte is 1).
        success = buf[1] == 0
        del buf[:2]
        if success:
            self.state = ClientState.REQUEST
        else:
            self.state = ClientState.CLOSED
            self._buf.clear()
        return AuthResult(success)

    def _reply(self) -> Reply | NeedData:
        buf = self._buf
        if len(buf) < 3:
            return NEED_DATA
        if buf[0] != SOCKS5:
            raise self._fail(f"SOCKS5 reply with version {buf[0]}")
        code = buf[1]
        if code != ReplyCode.SUCCEEDED:
            self.state = ClientState.CLOSED
            self._buf.clear()
            return Reply(code)
        try:
            decoded = decode_address(buf, 3)
        except AddressError as e:
            raise self._fail(f"SOCKS5 reply: {e}") from None
        if decoded is NEED_DATA:
            return NEED_DATA
        host, port, end = decoded
        del buf[:end]
        self.state = ClientState.ESTABLISHED
        return Reply(code, host, port)


# -- the whole handshake --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HandshakeFailed(Exception):
    """The server refused: ``why`` says how (a refused method, account or request)."""

    why: str
    code: int | None = None  # the SOCKS5 reply code, when the request was refused

    def __str__(self) -> str:
        return self.why


class ClientHandshake:
    """A whole SOCKS5 client handshake as V2Ray runs it: one method offered (password when
    there is an account), then the request.

    :meth:`initiate` gives the greeting; :meth:`receive_data` takes the server's bytes and
    returns the bytes to write next; :attr:`reply` is the server's successful
    :class:`Reply` once established. A refusal raises :class:`HandshakeFailed`; broken
    input raises :class:`ProtocolError`.
    """

    def __init__(self, command: int, host: str, port: int, username: bytes | None = None,
                 password: bytes = b"") -> None:
        self.codec = ClientCodec()
        self.request = Request(SOCKS5, command, host, port)
        self.username = username
        self.password = password
        self.reply: Reply | None = None

    @property
    def established(self) -> bool:
        """True once the server's Reply said success."""
        return self.codec.state is ClientState.ESTABLISHED

    def initiate(self) -> bytes:
        """The greeting, and with an account the credentials right behind it (V2Ray sends
        both in one write, without waiting for the method choice)."""
        if self.username is None:
            return self.codec.send(Greeting((METHOD_NO_AUTH,)))
        greeting = self.codec.send(Greeting((METHOD_PASSWORD,)))
        return greeting + client_credentials(self.username, self.password)

    def receive_data(self, data: bytes) -> bytes:
        """Feed the server's bytes; the bytes to send now (maybe empty)."""
        codec = self.codec
        codec.receive_data(data)
        out = bytearray()
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                return bytes(out)
            if isinstance(event, MethodChoice):
                if event.method == METHOD_NO_ACCEPTABLE:
                    raise HandshakeFailed("server accepts none of the offered auth methods")
                if event.method == METHOD_PASSWORD:
                    # only offered with an account, whose credentials initiate() sent
                    codec.send(Credentials(self.username or b"", self.password))
                else:
                    out += codec.send(self.request)
            elif isinstance(event, AuthResult):
                if not event.success:
                    raise HandshakeFailed("server rejects the user name or password")
                out += codec.send(self.request)
            elif isinstance(event, Reply):
                if event.code != ReplyCode.SUCCEEDED:
                    verb = "CONNECT" if self.request.command == CMD_CONNECT else "request"
                    raise HandshakeFailed(f"server refused the {verb}: {reply_name(event.code)}",
                                          event.code)
                self.reply = event
                return bytes(out)
