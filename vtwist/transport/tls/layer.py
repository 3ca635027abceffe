"""The TLS layer: endpoint wrappers (:class:`TLSLayer` on the lower connection, the
application above).

Client side, OpenSSL checks the chain and the server's name (``serverName``, else the
address; see :mod:`vtwist.transport.tls.context` and :mod:`vtwist.transport.tls.tuning`).
A failed handshake (untrusted chain, name mismatch,
garbage) closes the connection with one log line saying why. :data:`TLS` is the
``IStreamLayer`` the stack puts right above the base endpoint.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.interfaces import IStreamLayer
from vtwist.transport import registry
from vtwist.transport.internals import tls_session_reused
from vtwist.transport.layer import LayerClientEndpoint, LayerServerEndpoint
from vtwist.transport.tls import calls
from vtwist.transport.tls.context import (
    CLIENT_CREATORS,
    ResumingClientCreator,
    RotatingServerOptions,
    server_context_factory,
)
from vtwist.transport.tls.memory import TLS1_3, MemoryTLSLayer
from vtwist.transport.tls.settings import TLSSettings
from vtwist.transport.tls.tuning import verify_error

log = Logger(namespace="vtwist.transport.tls")

HANDSHAKE_TIMEOUT = 10.0


# -- the layer -------------------------------------------------------------------------
def describe_tls_failure(reason: Failure, server_name: str | None = None,
                         connection: SSL.Connection | None = None) -> str:
    """A one-line reason for a failed TLS handshake (``connection``: its OpenSSL connection,
    which knows why a certificate failed verification)."""
    if reason.check(VerificationError):
        return f"certificate does not match the name {server_name!r}: {reason.value}"
    failed = verify_error(connection) if reason.check(SSL.Error) and connection else None
    if failed is not None:
        mismatch, text = failed
        if mismatch:
            return f"certificate does not match the name {server_name!r}: {text}"
        return f"untrusted certificate chain (certificate verify failed: {text})"
    if reason.check(SSL.Error):
        parts = []
        for item in reason.value.args[0] if reason.value.args else []:
            parts.append(item[-1] if isinstance(item, tuple) else str(item))
        text = "; ".join(p for p in parts if p) or str(reason.value)
        if "certificate verify failed" in text:
            return f"untrusted certificate chain ({text})"
        return text
    if reason.check(ConnectionDone, ConnectionLost):
        return "connection closed during the handshake"
    return str(reason.value) or reason.type.__name__


class TLSLayer(MemoryTLSLayer):
    """TLS right on the lower connection; the application starts once the handshake is
    done (see :class:`~vtwist.transport.tls.memory.MemoryTLSLayer`)."""

    name = "TLS"
    log = log
    handshakeTimeout = HANDSHAKE_TIMEOUT

    def __init__(self, factory: IProtocolFactory, creator: Any, client: bool,
                 ready: Deferred | None = None, server_name: str | None = None,
                 clock: Any = None, resumption: ResumingClientCreator | None = None) -> None:
        super().__init__(factory, creator, client, ready, clock)
        self.server_name = server_name
        #: The client's :class:`~vtwist.transport.tls.context.ResumingClientCreator`, if any.
        self.resumption = resumption

    def tlsHandshakeDone(self) -> None:
        """OpenSSL finished the handshake (and verification). A TLS 1.2 session is
        resumable now; a TLS 1.3 one only once the server's tickets are read, so until then
        the cached session (if any) stays the one new connections offer."""
        if self.resumption is not None and calls.version(self.tls) < TLS1_3:
            self.resumption.remember(self.tls)
        self.handshakeDone()

    def tlsFirstData(self) -> None:
        """The first records after the handshake: TLS 1.3 tickets are in, keep the session."""
        if self.resumption is not None:
            self.resumption.remember(self.tls)
            self.resumption = None

    @property
    def resumed(self) -> bool:
        """True when this connection's handshake resumed an earlier session (False once
        the connection is gone)."""
        return self.tls is not None and tls_session_reused(self.tls)

    def describeFailure(self, reason: Failure) -> str:
        """Name the TLS reason: untrusted chain, name mismatch, garbage ..."""
        return describe_tls_failure(reason, self.server_name, self.tls)


def wrap_server_endpoint(endpoint: IStreamServerEndpoint, settings: TLSSettings,
                         default_alpn: list[str] | None = None,
                         clock: Any = None) -> IStreamServerEndpoint:
    """``endpoint`` with TLS in front of the application (ALPN default: h2, http/1.1)."""
    if default_alpn is None:
        default_alpn = ["h2", "http/1.1"]
    options = RotatingServerOptions(lambda: server_context_factory(settings, default_alpn))
    return LayerServerEndpoint(endpoint, lambda f: TLSLayer(f, options, False, clock=clock))


def wrap_client_endpoint(reactor: Any, endpoint: IStreamClientEndpoint, host: str,
                         settings: TLSSettings,
                         default_alpn: list[str] | None = None) -> IStreamClientEndpoint:
    """``endpoint`` with a TLS client in front; the name checked is serverName or ``host``."""
    if default_alpn is None:
        default_alpn = ["h2", "http/1.1"]
    server_name = settings.server_name or host
    creator = CLIENT_CREATORS.get(settings, server_name, default_alpn)

    resumption = creator if isinstance(creator, ResumingClientCreator) else None

    def make(factory: IProtocolFactory, ready: Deferred) -> TLSLayer:
        return TLSLayer(factory, creator, True, ready, server_name, reactor, resumption)

    return LayerClientEndpoint(endpoint, make)


# -- the IStreamLayer (vtwist.transport.stack) ------------------------------------------
@implementer(IStreamLayer)
class TLSStreamLayer:
    """TLS right above the base endpoint when ``security`` is tls; the default ALPN per side
    is the network's (its registry entry)."""

    name = "TLS"

    def wrapServer(self, endpoint: IStreamServerEndpoint, settings: Any) -> IStreamServerEndpoint:
        """``endpoint`` with a TLS server in front, or unchanged without ``security: tls``."""
        if settings.security != "tls":
            return endpoint
        return wrap_server_endpoint(endpoint, settings.tls,
                                    default_alpn=list(registry.require(settings.network).server_alpn))

    def wrapClient(self, endpoint: IStreamClientEndpoint, settings: Any, host: str, port: int,
                   reactor: Any = None) -> IStreamClientEndpoint:
        """``endpoint`` with a TLS client in front, or unchanged without ``security: tls``."""
        if settings.security != "tls":
            return endpoint
        return wrap_client_endpoint(reactor, endpoint, host, settings.tls,
                                    default_alpn=list(registry.require(settings.network).client_alpn))


#: The TLS layer.
TLS = TLSStreamLayer()
