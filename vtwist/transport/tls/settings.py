"""tlsSettings: plain data and its parser (``cryptography`` for certificates; no Twisted).

Server side: ``certificates[]`` with usage ``encipherment`` (file or inline PEM; several
certificates are chosen by SNI, the first one being the default). Client side: the server's
name (``serverName``, else the address) is checked against the system trust store plus every
certificate listed in ``certificates`` (V2Ray 4.34 trusts those, typically with usage
``verify``; with ``disableSystemRoot`` only those). ``allowInsecure`` skips verification.
Certificates and keys are read and checked here, at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from vtwist.config.node import Node

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
    #: Session tickets (server) and resumption (client). V2Ray 4.34's
    #: ``enableSessionResumption`` defaults to false; vtwist resumes unless it is set false.
    session_resumption: bool = True

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
    settings.session_resumption = node.bool("enableSessionResumption", True)
    if node.has("disableSessionResumption"):  # V2Ray before 4.33, still in v2fly's examples
        settings.session_resumption = not node.bool("disableSessionResumption")
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
