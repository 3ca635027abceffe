"""The one module that touches Twisted's private names (a test keeps it that way).

- Twisted's ``tcp.Connection`` pauses its producer once its buffer passes one read's worth
  (64 KiB). A relay would then pause and resume the other side on nearly every read, so
  :func:`raise_write_high_water` lets the socket buffer more before it pushes back.
- ``IOpenSSLTrustRoot`` is a public interface that lives in a private module.
- The splice relay (:mod:`vtwist.tunnel.splice`) takes a socket over from its transport only
  when :func:`idle_plain_tcp` says nothing is buffered or half-closed there, and checks with
  :func:`endpoint_protocol` that a connection's bytes go unchanged to the relay's protocol.
- pyOpenSSL has no ``SSL_session_reused``; :func:`tls_session_reused` calls it through
  pyOpenSSL's private bindings (TLS resumption is observable, for tests and logs).
"""

from __future__ import annotations

from typing import Any

from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.endpoints import _WrappingProtocol
from twisted.internet.tcp import Connection

__all__ = ["IOpenSSLTrustRoot", "WRITE_HIGH_WATER", "endpoint_protocol", "idle_plain_tcp",
           "raise_write_high_water", "tls_session_reused"]

#: A relayed socket pauses its source only past this many buffered bytes. Twisted's default
#: high-water mark equals one 64 KiB read, so nearly every read would pause and resume the
#: other side (epoll churn); reads stay 64 KiB.
WRITE_HIGH_WATER = 256 * 1024


def raise_write_high_water(transport: Any, limit: int = WRITE_HIGH_WATER) -> None:
    """Let the socket under ``transport`` (through any wrapping layers) buffer ``limit`` bytes
    before it pauses its producer. Reads keep their size."""
    for _ in range(8):
        if isinstance(transport, Connection):
            def full(t: Connection = transport) -> bool:
                return len(t.dataBuffer) + t._tempDataLen > limit

            transport._isSendBufferFull = full  # type: ignore[method-assign]
            return
        transport = getattr(transport, "lowerTransport", None) or getattr(
            transport, "transport", None)
        if transport is None:
            return


def idle_plain_tcp(transport: Any) -> bool:
    """Whether ``transport`` is a plain TCP connection (no TLS, no wrapping layer) that is
    open both ways and has nothing waiting in its write buffer: its socket can be handed to
    a kernel-to-kernel relay without reordering or losing a byte."""
    if not isinstance(transport, Connection) or transport.TLS:
        return False
    if not transport.connected or transport.disconnecting:
        return False
    if transport._writeDisconnecting or transport._writeDisconnected:
        return False
    return len(transport.dataBuffer) == transport.offset and transport._tempDataLen == 0


def endpoint_protocol(protocol: Any) -> Any:
    """The protocol inside the pass-through wrapper Twisted's client endpoints put around it
    (``dataReceived`` forwarded unchanged), or ``protocol`` itself."""
    for _ in range(4):
        if not isinstance(protocol, _WrappingProtocol):
            break
        protocol = protocol._wrappedProtocol
    return protocol


def tls_session_reused(connection: Any) -> bool:
    """True when the handshake of ``connection`` (an ``OpenSSL.SSL.Connection``) resumed."""
    from OpenSSL._util import lib

    return bool(lib.SSL_session_reused(connection._ssl))
