"""The TLS layer: endpoint wrappers (TLSMemoryBIOProtocol below, the application above).

Client side, the server's name (``serverName``, else the address) is checked with
service-identity through Twisted's ``optionsForClientTLS`` (see
:mod:`vtwist.transport.tls.context`). A failed handshake (untrusted chain, name mismatch,
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
    IHandshakeListener,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.interfaces import IStreamLayer
from vtwist.transport import registry
from vtwist.transport.internals import LeanTLSFactory, tls_session_reused
from vtwist.transport.layer import Layer, LayerClientEndpoint, LayerServerEndpoint
from vtwist.transport.tls.context import (
    CLIENT_CREATORS,
    ResumingClientCreator,
    RotatingServerOptions,
    server_context_factory,
)
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


@implementer(IHandshakeListener)
class TLSLayer(Layer):
    """Sits on a TLSMemoryBIOProtocol; the application starts once the handshake is done."""

    name = "TLS"
    log = log
    handshakeTimeout = HANDSHAKE_TIMEOUT

    def __init__(self, factory: IProtocolFactory, ready: Deferred | None = None,
                 server_name: str | None = None, clock: Any = None) -> None:
        super().__init__(factory, ready, clock)
        self.server_name = server_name

    #: The client's :class:`~vtwist.transport.tls.context.ResumingClientCreator`, if any.
    resumption: Any = None

    def handshakeCompleted(self) -> None:
        """OpenSSL finished the handshake (and verification)."""
        self._rememberSession()
        self.handshakeDone()

    def streamData(self, data: bytes) -> None:
        """The first bytes: TLS 1.3 tickets have arrived by now, keep the session."""
        if self.resumption is not None:
            self._rememberSession()
            self.resumption = None
        super().streamData(data)

    def _rememberSession(self) -> None:
        if self.resumption is not None:
            self.resumption.remember(self.transport.getHandle())

    @property
    def resumed(self) -> bool:
        """True when this connection's handshake resumed an earlier session."""
        return tls_session_reused(self.transport.getHandle())

    def describeFailure(self, reason: Failure) -> str:
        """Name the TLS reason: untrusted chain, name mismatch, garbage ..."""
        handle = self.transport.getHandle() if self.transport is not None else None
        return describe_tls_failure(reason, self.server_name, handle)

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The ALPN protocol agreed on, if any."""
        return self.transport.negotiatedProtocol


@implementer(IStreamServerEndpoint)
class _TLSWrappedServerEndpoint:
    """Listens on ``endpoint`` with a TLS factory around the given factory."""

    def __init__(self, endpoint: IStreamServerEndpoint, options: Any) -> None:
        self.endpoint = endpoint
        self.options = options

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred:
        return self.endpoint.listen(LeanTLSFactory(self.options, False, protocolFactory))


@implementer(IStreamClientEndpoint)
class _TLSWrappedClientEndpoint:
    """Connects ``endpoint`` with a TLS factory around the given factory."""

    def __init__(self, endpoint: IStreamClientEndpoint, creator: Any) -> None:
        self.endpoint = endpoint
        self.creator = creator

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        return self.endpoint.connect(LeanTLSFactory(self.creator, True, protocolFactory))


def wrap_server_endpoint(endpoint: IStreamServerEndpoint, settings: TLSSettings,
                         default_alpn: list[str] | None = None,
                         clock: Any = None) -> IStreamServerEndpoint:
    """``endpoint`` with TLS in front of the application (ALPN default: h2, http/1.1)."""
    if default_alpn is None:
        default_alpn = ["h2", "http/1.1"]
    options = RotatingServerOptions(lambda: server_context_factory(settings, default_alpn))
    return LayerServerEndpoint(_TLSWrappedServerEndpoint(endpoint, options),
                               lambda f: TLSLayer(f, clock=clock))


def wrap_client_endpoint(reactor: Any, endpoint: IStreamClientEndpoint, host: str,
                         settings: TLSSettings,
                         default_alpn: list[str] | None = None) -> IStreamClientEndpoint:
    """``endpoint`` with a TLS client in front; the name checked is serverName or ``host``."""
    if default_alpn is None:
        default_alpn = ["h2", "http/1.1"]
    server_name = settings.server_name or host
    creator = CLIENT_CREATORS.get(settings, server_name, default_alpn)

    def make(factory: IProtocolFactory, ready: Deferred) -> TLSLayer:
        layer = TLSLayer(factory, ready, server_name, clock=reactor)
        if isinstance(creator, ResumingClientCreator):
            layer.resumption = creator
        return layer

    return LayerClientEndpoint(_TLSWrappedClientEndpoint(endpoint, creator), make)


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
