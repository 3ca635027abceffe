"""``security: "tls"``: tlsSettings, and TLS server/client endpoint wrappers.

Server side: ``certificates[]`` with usage ``encipherment`` (file or inline PEM; several
certificates are chosen by SNI, the first one being the default). Client side: the server's
name (``serverName``, else the address) is checked with service-identity through Twisted's
``optionsForClientTLS``, against the system trust store plus every certificate listed in
``certificates`` (V2Ray 4.34 trusts those, typically with usage ``verify``; with
``disableSystemRoot`` only those). ``allowInsecure`` skips verification. A failed handshake
(untrusted chain, name mismatch, garbage) closes the connection with one log line saying why.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from service_identity import VerificationError
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.config.node import Node
from vtwist.transport.internals import IOpenSSLTrustRoot
from vtwist.transport.layer import Layer, LayerClientEndpoint, LayerServerEndpoint

log = Logger(namespace="vtwist.transport.tls")

HANDSHAKE_TIMEOUT = 10.0
USAGES = ("encipherment", "verify", "issue")


@dataclass
class TLSCertificate:
    """One ``certificates[]`` entry: a chain (leaf first), an optional key, its usage."""

    usage: str
    chain: list[x509.Certificate]
    key: Any = None  # a cryptography private key


@dataclass
class TLSSettings:
    """Validated ``tlsSettings``."""

    server_name: str = ""
    alpn: list[str] = field(default_factory=list)
    allow_insecure: bool = False
    disable_system_root: bool = False
    certificates: list[TLSCertificate] = field(default_factory=list)

    @property
    def server_certificates(self) -> list[TLSCertificate]:
        """Certificates a server presents (usage encipherment)."""
        return [c for c in self.certificates if c.usage == "encipherment"]


def _read_pem(node: Node, file_key: str, inline_key: str,
              what: str) -> tuple[bytes | None, str]:
    """The PEM from ``file_key`` (a path) or else ``inline_key``, and the key it came from."""
    path = node.str(file_key, "")
    lines = node.get(inline_key, [])
    if path:
        try:
            with open(path, "rb") as f:
                return f.read(), file_key
        except OSError as e:
            raise node.error(f"cannot read {what} file {path!r}: {e.strerror or e}",
                             file_key) from None
    if isinstance(lines.value, str):
        return lines.value.encode(), inline_key
    text = "\n".join(i.as_str() for i in lines.items())
    return (text.encode() if text else None), inline_key


def _parse_certificate(node: Node, inbound: bool) -> TLSCertificate:
    usage = node.str("usage", "encipherment", lower=True)
    if usage not in USAGES:
        node.warn(f"usage {usage!r} is unknown, using encipherment (as V2Ray does)")
        usage = "encipherment"
    if usage == "issue":
        raise node.error("usage 'issue' (issuing certificates on the fly) is not supported"
                         " by vtwist", "usage")
    data, where = _read_pem(node, "certificateFile", "certificate", "certificate")
    if data is None:
        raise node.error("needs certificateFile or certificate")
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise node.error(f"not a PEM certificate: {e}", where) from None
    key_data, kwhere = _read_pem(node, "keyFile", "key", "key")
    key = None
    if key_data is not None:
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError) as e:
            raise node.error(f"not an unencrypted PEM private key: {e}", kwhere) from None
        if key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != chain[0].public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
            raise node.error("the key does not belong to the certificate", kwhere)
    elif inbound and usage == "encipherment":
        raise node.error("needs keyFile or key for usage encipherment")
    node.warn_unknown()
    return TLSCertificate(usage, chain, key)


def parse_tls_settings(node: Node, inbound: bool) -> TLSSettings:
    """Validate ``tlsSettings`` for a server (``inbound``) or a client."""
    node = node.or_empty()
    settings = TLSSettings()
    settings.server_name = node.str("serverName", "")
    settings.alpn = [p for p in node.comma_list("alpn") if p]
    settings.allow_insecure = node.bool("allowInsecure", False)
    settings.disable_system_root = node.bool("disableSystemRoot", False)
    node.bool("enableSessionResumption", False)
    for later in ("pinnedPeerCertificateChainSha256", "allowInsecureCiphers", "fingerprint"):
        if node.has(later):
            node.warn(f"{later} is not in V2Ray 4.34 and not supported by vtwist; ignored")
    for item in node.get("certificates", []).items():
        settings.certificates.append(_parse_certificate(item, inbound))
    if inbound and not settings.server_certificates:
        raise node.error("a TLS inbound needs at least one certificate with usage"
                         " encipherment", "certificates")
    if not inbound and settings.disable_system_root and not settings.certificates \
            and not settings.allow_insecure:
        node.warn("disableSystemRoot without certificates trusts nothing; every"
                  " handshake will fail")
    node.warn_unknown()
    return settings


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
    """A CertificateOptions for a server: SNI picks among the certificates, ALPN as set."""
    alpn = [p.encode() for p in (settings.alpn or default_alpn)]
    options: list[tuple[list[str], CertificateOptions]] = []
    for entry in settings.server_certificates:
        opts = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(entry.key),
            certificate=crypto.X509.from_cryptography(entry.chain[0]),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in entry.chain[1:]],
        )
        ctx = opts.getContext()
        if alpn:
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
class _InsecureClientCreator:
    """allowInsecure: send SNI and ALPN, verify nothing."""

    def __init__(self, server_name: str, alpn: list[bytes]) -> None:
        self.sni = None if isIPAddress(server_name) or isIPv6Address(server_name) \
            else server_name.encode("idna")
        self.context = CertificateOptions(
            verify=False, acceptableProtocols=alpn or None).getContext()

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        conn = SSL.Connection(self.context, None)
        conn.set_app_data(tlsProtocol)
        if self.sni:
            conn.set_tlsext_host_name(self.sni)
        conn.set_connect_state()
        return conn


def client_creator(server_name: str, settings: TLSSettings,
                   default_alpn: list[str]) -> Any:
    """The connection creator for a client connecting to ``server_name``."""
    alpn = [p.encode() for p in (settings.alpn or default_alpn)]
    if settings.allow_insecure:
        return _InsecureClientCreator(server_name, alpn)
    trusted = [c for entry in settings.certificates for c in entry.chain]
    root = _TrustRoot(trusted, system=not settings.disable_system_root)
    return optionsForClientTLS(server_name, trustRoot=root,
                               acceptableProtocols=alpn or None)


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
            creator = per[key] = client_creator(server_name, settings, default_alpn)
        return creator

    def __len__(self) -> int:
        return len(self._by_settings)


#: The process-wide cache :func:`wrap_client_endpoint` uses.
CLIENT_CREATORS = ClientCreatorCache()


# -- the layer -------------------------------------------------------------------------
def describe_tls_failure(reason: Failure, server_name: str | None = None) -> str:
    """A one-line reason for a failed TLS handshake."""
    if reason.check(VerificationError):
        return f"certificate does not match the name {server_name!r}: {reason.value}"
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

    def handshakeCompleted(self) -> None:
        """OpenSSL finished the handshake (and verification)."""
        self.handshakeDone()

    def describeFailure(self, reason: Failure) -> str:
        """Name the TLS reason: untrusted chain, name mismatch, garbage ..."""
        return describe_tls_failure(reason, self.server_name)

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The ALPN protocol agreed on, if any."""
        return self.transport.negotiatedProtocol


@implementer(IStreamServerEndpoint)
class _TLSWrappedServerEndpoint:
    """Listens on ``endpoint`` with a TLSMemoryBIOFactory around the given factory."""

    def __init__(self, endpoint: IStreamServerEndpoint, options: Any) -> None:
        self.endpoint = endpoint
        self.options = options

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred:
        return self.endpoint.listen(TLSMemoryBIOFactory(self.options, False, protocolFactory))


@implementer(IStreamClientEndpoint)
class _TLSWrappedClientEndpoint:
    """Connects ``endpoint`` with a TLSMemoryBIOFactory around the given factory."""

    def __init__(self, endpoint: IStreamClientEndpoint, creator: Any) -> None:
        self.endpoint = endpoint
        self.creator = creator

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        return self.endpoint.connect(TLSMemoryBIOFactory(self.creator, True, protocolFactory))


def wrap_server_endpoint(endpoint: IStreamServerEndpoint, settings: TLSSettings,
                         default_alpn: list[str] | None = None,
                         clock: Any = None) -> IStreamServerEndpoint:
    """``endpoint`` with TLS in front of the application (ALPN default: h2, http/1.1)."""
    if default_alpn is None:
        default_alpn = ["h2", "http/1.1"]
    options = server_context_factory(settings, default_alpn)
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
    return LayerClientEndpoint(_TLSWrappedClientEndpoint(endpoint, creator),
                               lambda f, ready: TLSLayer(f, ready, server_name, clock=reactor))
