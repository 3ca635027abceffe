"""OpenSSL contexts for TLS: a server's (SNI picks the certificate, ALPN as set) and a
client's connection creators (trust roots, allowInsecure), cached per settings object.

Sessions resume: servers issue tickets (the key replaced every :data:`TICKET_KEY_LIFETIME`),
and each cached client creator offers the last session of its server name, as V2Ray's client
keeps a session cache."""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)
from twisted.internet.ssl import CertificateOptions
from zope.interface import implementer

from vtwist.transport.internals import IOpenSSLTrustRoot
from vtwist.transport.tls import calls
from vtwist.transport.tls.settings import TLSSettings
from vtwist.transport.tls.tuning import expect_peer_name, select_alpn, tune_context


# -- contexts ------------------------------------------------------------------------
def _alpn_select(protocols: list[bytes]) -> Any:
    def select(conn: SSL.Connection, offered: list[bytes]) -> Any:
        for p in protocols:
            if p in offered:
                return p
        return SSL.NO_OVERLAPPING_PROTOCOLS

    return select


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
                 if isinstance(a.value, str)]
    return [n.lower() for n in names]


def _name_matches(pattern: str, name: str) -> bool:
    """A certificate name against an SNI name; ``*.`` covers exactly one label."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == name


def server_context_factory(settings: TLSSettings, default_alpn: list[str]) -> CertificateOptions:
    """A CertificateOptions for a server: SNI picks among the certificates, ALPN as set.

    Session tickets are on (OpenSSL makes a random ticket key per context), so clients
    resume; :class:`RotatingServerOptions` replaces the contexts, and with them the key.
    """
    alpn = [p.encode() for p in (settings.alpn or default_alpn)]
    options: list[tuple[list[str], CertificateOptions]] = []
    for entry in settings.server_certificates:
        opts = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(entry.key),
            certificate=crypto.X509.from_cryptography(entry.chain[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in entry.chain[1:]],
            enableSessionTickets=settings.session_resumption,
        )
        ctx = tune_context(opts.getContext())
        if alpn and not select_alpn(ctx, alpn):  # pragma: no cover - the pyOpenSSL build
            ctx.set_alpn_select_callback(_alpn_select(alpn))
        options.append((_names(entry.chain[0]), opts))
    default = options[0][1]
    if len(options) > 1:
        def pick(conn: SSL.Connection) -> None:
            name = conn.get_servername()
            if not name:
                return
            wanted = name.decode("ascii", "replace").lower()
            for names, opts in options:
                if any(_name_matches(n, wanted) for n in names):
                    conn.set_context(opts.getContext())
                    return

        default.getContext().set_tlsext_servername_callback(pick)
    return default


#: How long a server's ticket key lives before the contexts (and the key) are replaced.
TICKET_KEY_LIFETIME = 6 * 3600.0


@implementer(IOpenSSLServerConnectionCreator)
class RotatingServerOptions:
    """A server's connection creator whose contexts are rebuilt every ``lifetime`` seconds.

    pyOpenSSL cannot set ticket keys, so rotating the key means a new context: tickets made
    under the old key then give a full handshake, as after any key rotation.
    """

    def __init__(self, build: Callable[[], CertificateOptions],
                 lifetime: float = TICKET_KEY_LIFETIME,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.build = build
        self.lifetime = lifetime
        self.now = now
        self.options = build()
        self.built = now()
        self._context: SSL.Context | None = None  # the options' context, once asked

    def current(self) -> CertificateOptions:
        """The options in use, rebuilt (new ticket key) once they are ``lifetime`` old."""
        if self.now() - self.built >= self.lifetime:
            self.options = self.build()
            self.built = self.now()
            self._context = None
        return self.options

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """A server connection on the current context (ALPN and SNI are the context's; no
        app data: a connection and its protocol must not hold each other)."""
        context = self._context
        if context is None or self.now() - self.built >= self.lifetime:
            context = self._context = self.current().getContext()
        return calls.connection(context, False)

    def getContext(self) -> SSL.Context:
        """The current context (the old-style context factory interface)."""
        return self.current().getContext()


@implementer(IOpenSSLClientConnectionCreator)
class ResumingClientCreator:
    """Wraps a client connection creator: each connection offers the last session it saw
    for this server name, so the handshake resumes (a ticket) instead of starting over.

    The TLS layer calls :meth:`remember` after the handshake and again when the first bytes
    arrive (TLS 1.3 servers send their tickets after the handshake).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        #: The session offered (a handle from :func:`~vtwist.transport.tls.calls.session`).
        self.session: object | None = None

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        """The inner creator's connection, offering the cached session."""
        conn = self.inner.clientConnectionForTLS(tlsProtocol)
        if self.session is not None:
            calls.resume(conn, self.session)
        return conn

    def remember(self, conn: SSL.Connection) -> None:
        """Keep ``conn``'s session for the next connection."""
        session = calls.session(conn)
        if session is not None:
            self.session = session


@implementer(IOpenSSLTrustRoot)
class _TrustRoot:
    """System roots (unless disabled) plus the configured certificates."""

    def __init__(self, certificates: list[x509.Certificate], system: bool) -> None:
        self.certificates = certificates
        self.system = system

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        if self.system:
            context.set_default_verify_paths()
        store = context.get_cert_store()
        for cert in self.certificates:
            store.add_cert(crypto.X509.from_cryptography(cert))


@implementer(IOpenSSLClientConnectionCreator)
class _ClientCreator:
    """Client connections on one context (built once, offering the ALPN protocols): SNI (a
    DNS name) per connection, nothing else; the context does any verification itself."""

    def __init__(self, server_name: str, alpn: list[bytes], context: SSL.Context) -> None:
        self.sni = None if isIPAddress(server_name) or isIPv6Address(server_name) \
            else server_name.encode("idna")
        self.alpn = alpn
        self.context = context
        if alpn:  # offered by the context (its own), not set on each connection
            context.set_alpn_protos(alpn)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return calls.connection(self.context, True, self.sni)


class _InsecureClientCreator(_ClientCreator):
    """allowInsecure: send SNI and ALPN, verify nothing."""

    def __init__(self, server_name: str, alpn: list[bytes]) -> None:
        super().__init__(server_name, alpn, tune_context(CertificateOptions(
            verify=False, enableSessionTickets=True).getContext()))


def client_creator(server_name: str, settings: TLSSettings,
                   default_alpn: list[str]) -> Any:
    """The connection creator for a client connecting to ``server_name``.

    A verifying client's context checks the chain (trust roots as set) and the name in
    OpenSSL (:func:`~vtwist.transport.tls.tuning.expect_peer_name`), set once here.
    """
    alpn = [p.encode() for p in (settings.alpn or default_alpn)]
    if settings.allow_insecure:
        return _InsecureClientCreator(server_name, alpn)
    trusted = [c for entry in settings.certificates for c in entry.chain]
    root = _TrustRoot(trusted, system=not settings.disable_system_root)
    context = tune_context(CertificateOptions(trustRoot=root,
                                              enableSessionTickets=True).getContext())
    if not expect_peer_name(context, server_name):  # pragma: no cover - the pyOpenSSL build
        raise RuntimeError(f"cannot make OpenSSL check the server name {server_name!r}")
    return _ClientCreator(server_name, alpn, context)


class ClientCreatorCache:
    """Client connection creators per TLSSettings object (by identity) and (name, ALPN).

    An OpenSSL context and its trust store are built once per settings object, not per
    connection. The settings stay plain data: the cache lives here, and an entry goes when
    its settings object is garbage-collected.
    """

    def __init__(self) -> None:
        self._by_settings: dict[int, dict[tuple[str, tuple[str, ...]], Any]] = {}

    def get(self, settings: TLSSettings, server_name: str, default_alpn: list[str]) -> Any:
        """The creator for ``settings`` reaching ``server_name``, built on first use."""
        per = self._by_settings.get(id(settings))
        if per is None:
            per = self._by_settings[id(settings)] = {}
            weakref.finalize(settings, self._by_settings.pop, id(settings), None)
        key = (server_name, tuple(default_alpn))
        creator = per.get(key)
        if creator is None:
            creator = client_creator(server_name, settings, default_alpn)
            if settings.session_resumption:
                creator = ResumingClientCreator(creator)
            per[key] = creator
        return creator

    def __len__(self) -> int:
        return len(self._by_settings)


#: The process-wide cache :func:`wrap_client_endpoint` uses.
CLIENT_CREATORS = ClientCreatorCache()
