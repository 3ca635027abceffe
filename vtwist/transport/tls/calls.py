"""The OpenSSL calls the TLS layer makes per record and per flight, straight through
pyOpenSSL's cffi binding: no exception for an empty memory BIO or a read that wants more
bytes, and one reused buffer instead of an allocation per call.

pyOpenSSL's ``Connection.recv``, ``bio_read``, ``bio_write`` and ``do_handshake`` each cost a
few Python calls, a fresh buffer, and a raised ``WantReadError`` when there is nothing (yet),
which is the common answer during a handshake and after every last record. Here the common
answers are return values; anything else goes through pyOpenSSL's own error mapping
(``Connection._raise_ssl_error``), so the exceptions callers see are pyOpenSSL's.

Per connection, :func:`connection` makes the ``SSL.Connection`` itself where no pyOpenSSL
callback needs it (see there), and :func:`session`, :func:`resume`, :func:`version` and
:func:`keep_session` do the client's resumption and the close bookkeeping in one call each.

Without the binding (:data:`DIRECT` false) the same functions use pyOpenSSL's public calls.
"""

from __future__ import annotations

from OpenSSL import SSL

try:
    from OpenSSL._util import ffi as _ffi
    from OpenSSL._util import lib as _lib
except ImportError:  # pragma: no cover - a pyOpenSSL without its cffi binding
    _ffi = _lib = None

_NEEDED = ("SSL_read", "SSL_write", "SSL_do_handshake", "SSL_get_error", "BIO_read",
           "BIO_write", "SSL_ERROR_WANT_READ", "SSL_ERROR_ZERO_RETURN", "SSL_new", "SSL_free",
           "SSL_set_mode", "SSL_MODE_AUTO_RETRY", "BIO_new", "BIO_s_mem", "SSL_set_bio",
           "SSL_set_connect_state", "SSL_set_accept_state", "SSL_set_tlsext_host_name",
           "SSL_get1_session", "SSL_SESSION_free", "SSL_set_session", "SSL_get_shutdown",
           "SSL_set_shutdown", "SSL_SENT_SHUTDOWN", "SSL_version")
#: True when the direct calls are available (else pyOpenSSL's methods are used).
DIRECT = _lib is not None and all(hasattr(_lib, n) for n in _NEEDED)

#: The size of the shared buffer: the most plaintext one ``read`` returns, and the most one
#: ``take`` takes from the outgoing BIO per call.
BUFFER_SIZE = 65536

if DIRECT:
    _BUFFER = _ffi.new("char[]", BUFFER_SIZE)  # one process, one reactor thread
    _WANT_READ = _lib.SSL_ERROR_WANT_READ
    _ZERO_RETURN = _lib.SSL_ERROR_ZERO_RETURN
    _SSL_read = _lib.SSL_read
    _SSL_write = _lib.SSL_write
    _SSL_do_handshake = _lib.SSL_do_handshake
    _SSL_get_error = _lib.SSL_get_error
    _BIO_read = _lib.BIO_read
    _BIO_write = _lib.BIO_write
    _unpack = _ffi.unpack
    _allocate = _ffi.new_allocator(should_clear_after_alloc=False)
    _NULL = _ffi.NULL
    _gc = _ffi.gc
    _SSL_new = _lib.SSL_new
    _SSL_free = _lib.SSL_free
    _SSL_set_mode = _lib.SSL_set_mode
    _AUTO_RETRY = _lib.SSL_MODE_AUTO_RETRY
    _BIO_new = _lib.BIO_new
    _BIO_s_mem = _lib.BIO_s_mem
    _SSL_set_bio = _lib.SSL_set_bio
    _SSL_set_connect_state = _lib.SSL_set_connect_state
    _SSL_set_accept_state = _lib.SSL_set_accept_state
    _SSL_set_tlsext_host_name = _lib.SSL_set_tlsext_host_name
    _SSL_get1_session = _lib.SSL_get1_session
    _SSL_SESSION_free = _lib.SSL_SESSION_free
    _SSL_set_session = _lib.SSL_set_session
    _SSL_get_shutdown = _lib.SSL_get_shutdown
    _SSL_set_shutdown = _lib.SSL_set_shutdown
    _SENT_SHUTDOWN = _lib.SSL_SENT_SHUTDOWN
    _SSL_version = _lib.SSL_version

#: The attributes ``SSL.Connection.__init__`` sets on a memory-BIO connection; a lean
#: connection (:func:`connection`) sets the same ones, and is made only when this
#: pyOpenSSL's own constructor sets exactly these (checked on first use).
_ATTRIBUTES = frozenset((
    "_ssl", "_context", "_app_data", "_alpn_select_callback_args", "_verify_helper",
    "_verify_callback", "_cookie_generate_helper", "_cookie_verify_helper", "_socket",
    "_into_ssl", "_from_ssl"))
#: The context attributes that hold a pyOpenSSL callback: one of them set, and callbacks
#: look the connection up in ``Connection._reverse_mapping``, which only pyOpenSSL's own
#: constructor fills. (pyOpenSSL's ALPN select callback, which Twisted sets on every
#: context, is asked only by a server, and not at all once
#: :func:`~vtwist.transport.tls.tuning.select_alpn` replaced it.)
_CALLBACKS = ("_verify_callback", "_info_callback", "_keylog_callback",
              "_tlsext_servername_callback", "_ocsp_callback", "_cookie_generate_helper",
              "_cookie_verify_helper")
_lean: bool | None = None  # whether pyOpenSSL's constructor matches _ATTRIBUTES


def _plain(context: SSL.Context, client: bool, server_name: bytes | None) -> SSL.Connection:
    conn = SSL.Connection(context, None)
    if client:
        if server_name:
            conn.set_tlsext_host_name(server_name)
        conn.set_connect_state()
    else:
        conn.set_accept_state()
    return conn


def connection(context: SSL.Context, client: bool,
               server_name: bytes | None = None) -> SSL.Connection:
    """A connection on memory BIOs in connect (``client``, sending ``server_name`` as SNI)
    or accept state: pyOpenSSL's ``Connection`` made without its constructor's Python
    (type checks, assertions, the weak reverse mapping its callbacks need) when the context
    has no pyOpenSSL callback; else pyOpenSSL's own."""
    global _lean
    if not DIRECT:
        return _plain(context, client, server_name)
    lean = context.__dict__.get("_vtwist_lean")
    if lean is None:
        if _lean is None:
            _lean = set(vars(SSL.Connection(context, None))) == _ATTRIBUTES
        lean = _lean and all(getattr(context, name, None) is None for name in _CALLBACKS)
        lean = context._vtwist_lean = (lean, lean and (
            getattr(context, "_alpn_select_callback", None) is None
            or hasattr(context, "_vtwist_alpn")))
    if not lean[not client]:
        return _plain(context, client, server_name)
    raw = _SSL_new(context._context)
    if raw == _NULL:  # pragma: no cover - out of memory: let pyOpenSSL say so
        return _plain(context, client, server_name)
    conn = _new_connection(_Connection)
    conn._ssl = ssl = _gc(raw, _SSL_free)
    _SSL_set_mode(ssl, _AUTO_RETRY)
    context._used = True
    conn._context = context
    conn._app_data = None
    conn._alpn_select_callback_args = None
    conn._verify_helper = context._verify_helper
    conn._verify_callback = context._verify_callback
    conn._cookie_generate_helper = context._cookie_generate_helper
    conn._cookie_verify_helper = context._cookie_verify_helper
    conn._socket = None
    conn._into_ssl = into = _BIO_new(_BIO_s_mem())
    conn._from_ssl = out = _BIO_new(_BIO_s_mem())
    if into == _NULL or out == _NULL:  # pragma: no cover - out of memory
        return _plain(context, client, server_name)
    _SSL_set_bio(ssl, into, out)
    if client:
        if server_name:
            if b"\0" in server_name:  # pragma: no cover - pyOpenSSL raises its TypeError
                conn.set_tlsext_host_name(server_name)
            _SSL_set_tlsext_host_name(ssl, server_name)
        _SSL_set_connect_state(ssl)
    else:
        _SSL_set_accept_state(ssl)
    return conn


_Connection = SSL.Connection
_new_connection = object.__new__


def session(conn: SSL.Connection) -> object | None:
    """``conn``'s session (an opaque handle for :func:`resume`), or None."""
    if not DIRECT:
        try:
            return conn.get_session()
        except SSL.Error:  # pragma: no cover - a connection that never had a session
            return None
    raw = _SSL_get1_session(conn._ssl)
    return None if raw == _NULL else _gc(raw, _SSL_SESSION_free)


def resume(conn: SSL.Connection, handle: object) -> None:
    """Offer the session ``handle`` (from :func:`session` on a connection of the same
    context) in ``conn``'s handshake."""
    if not DIRECT:
        conn.set_session(handle)  # type: ignore[arg-type]
    elif _SSL_set_session(conn._ssl, handle) != 1:  # pragma: no cover - OpenSSL refused
        raise SSL.Error([("", "", "cannot set the session")])


def version(conn: SSL.Connection) -> int:
    """``SSL_version``: the protocol version in use (0x0304 for TLS 1.3)."""
    if not DIRECT:
        return conn.get_protocol_version()
    return _SSL_version(conn._ssl)


def keep_session(conn: SSL.Connection) -> None:
    """Mark our close_notify as sent, so that freeing ``conn`` keeps its session resumable
    however the connection ended."""
    if not DIRECT:
        conn.set_shutdown(conn.get_shutdown() | SSL.SENT_SHUTDOWN)
        return
    ssl = conn._ssl
    _SSL_set_shutdown(ssl, _SSL_get_shutdown(ssl) | _SENT_SHUTDOWN)


def handshake(conn: SSL.Connection) -> bool:
    """One handshake step: True once it is done, False when it waits for the peer's bytes;
    raises ``SSL.Error`` when it failed."""
    if not DIRECT:
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            return False
        return True
    ssl = conn._ssl
    result = _SSL_do_handshake(ssl)
    if result == 1:
        return True
    if _SSL_get_error(ssl, result) == _WANT_READ:
        return False
    conn._raise_ssl_error(ssl, result)  # raises pyOpenSSL's exception
    raise SSL.Error([("", "", "handshake failed")])  # pragma: no cover - not reached


def read(conn: SSL.Connection, chunks: list[bytes]) -> bool:
    """Append every plaintext record OpenSSL can decrypt now to ``chunks``. Returns False
    when it wants more bytes, True when the peer's close_notify came; raises ``SSL.Error``
    for a TLS error."""
    if not DIRECT:
        while True:
            try:
                chunks.append(conn.recv(BUFFER_SIZE))
            except SSL.WantReadError:
                return False
            except SSL.ZeroReturnError:
                return True
    ssl = conn._ssl
    while True:
        result = _SSL_read(ssl, _BUFFER, BUFFER_SIZE)
        if result > 0:
            chunks.append(_unpack(_BUFFER, result))
            continue
        error = _SSL_get_error(ssl, result)
        if error == _WANT_READ:
            return False
        if error == _ZERO_RETURN:
            return True
        conn._raise_ssl_error(ssl, result)
        raise SSL.Error([("", "", "read failed")])  # pragma: no cover - not reached


def write(conn: SSL.Connection, data: bytes) -> int:
    """Encrypt ``data`` (at most one record's worth is taken per call by OpenSSL's rules);
    returns how much was taken. Raises ``SSL.WantReadError`` (renegotiation) or another
    ``SSL.Error``."""
    if not DIRECT:
        return conn.send(data)
    ssl = conn._ssl
    size = len(data)
    result = _SSL_write(ssl, data if type(data) is bytes else _ffi.from_buffer(data), size)
    if result > 0:
        return result
    conn._raise_ssl_error(ssl, result)
    raise SSL.Error([("", "", "write failed")])  # pragma: no cover - not reached


def take(conn: SSL.Connection, expected: int = 0) -> bytes:
    """Everything OpenSSL put in the outgoing memory BIO (b"" when it is empty);
    ``expected``: about how much is there (a larger write's records), to take it at once."""
    if not DIRECT:
        parts = []
        while True:
            try:
                parts.append(conn.bio_read(max(expected, BUFFER_SIZE)))
            except SSL.WantReadError:
                return b"".join(parts)
    bio = conn._from_ssl
    size = BUFFER_SIZE
    buffer = _BUFFER
    if expected > BUFFER_SIZE:
        size = expected + 4096
        buffer = _allocate("char[]", size)
    result = _BIO_read(bio, buffer, size)
    if result <= 0:
        return b""
    out = _unpack(buffer, result)
    if result < size:
        return out
    parts = [out]
    while True:
        result = _BIO_read(bio, _BUFFER, BUFFER_SIZE)
        if result <= 0:
            return b"".join(parts)
        parts.append(_unpack(_BUFFER, result))


def put(conn: SSL.Connection, data: bytes) -> None:
    """Hand the peer's bytes to OpenSSL (the incoming memory BIO grows as needed)."""
    if not DIRECT:
        conn.bio_write(data)
        return
    if type(data) is not bytes:
        data = bytes(data)
    if _BIO_write(conn._into_ssl, data, len(data)) <= 0:  # pragma: no cover - memory BIO
        conn.bio_write(data)  # a memory BIO takes everything: let pyOpenSSL say why not
