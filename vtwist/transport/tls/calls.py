"""The OpenSSL calls the TLS layer makes per record and per flight, straight through
pyOpenSSL's cffi binding: no exception for an empty memory BIO or a read that wants more
bytes, and one reused buffer instead of an allocation per call.

pyOpenSSL's ``Connection.recv``, ``bio_read``, ``bio_write`` and ``do_handshake`` each cost a
few Python calls, a fresh buffer, and a raised ``WantReadError`` when there is nothing (yet),
which is the common answer during a handshake and after every last record. Here the common
answers are return values; anything else goes through pyOpenSSL's own error mapping
(``Connection._raise_ssl_error``), so the exceptions callers see are pyOpenSSL's.

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
           "BIO_write", "SSL_ERROR_WANT_READ", "SSL_ERROR_ZERO_RETURN")
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
