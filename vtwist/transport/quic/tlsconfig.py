"""The aioquic configurations V2Ray 4.34's QUIC transport implies.

With ``security: tls`` the stream's tlsSettings are used (certificates, serverName, alpn,
allowInsecure). Without it, as in V2Ray: the server presents a self-signed certificate for
``quic.internal.v2ray.com`` made at start-up, and the client names that server and
verifies nothing. ALPN defaults to ``h2, http/1.1`` as V2Ray's TLS config does. Timeouts:
8 s handshake (the endpoints enforce it), 30 s idle on the client, 45 s on the server.
"""

from __future__ import annotations

import datetime
import ssl
from typing import Any

from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

INTERNAL_DOMAIN = "quic.internal.v2ray.com"
DEFAULT_ALPN = ["h2", "http/1.1"]
CLIENT_IDLE_TIMEOUT = 30.0
SERVER_IDLE_TIMEOUT = 45.0
HANDSHAKE_TIMEOUT = 8.0
#: V2Ray's server lets a client open 32 streams at once.
SERVER_MAX_STREAMS = 32
#: The per-stream receive window (bytes a stalled reader may have in flight to it).
STREAM_WINDOW = 1 << 20
#: The largest UDP payload sent, obfuscation included: what fits a 1500-byte MTU over IPv6,
#: and quic-go 0.29's receive buffer (1452 bytes) for the QUIC datagram inside.
DATAGRAM_SIZE = 1452

_internal: tuple[Any, Any] | None = None


def internal_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The process's self-signed certificate for ``quic.internal.v2ray.com``."""
    global _internal
    if _internal is None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, INTERNAL_DOMAIN)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(INTERNAL_DOMAIN)]),
                               critical=False)
                .sign(key, hashes.SHA256()))
        _internal = (cert, key)
    return _internal


def _base(is_client: bool, tls: Any, overhead: int) -> QuicConfiguration:
    config = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=list(tls.alpn) if tls is not None and tls.alpn else list(DEFAULT_ALPN),
        connection_id_length=12,
        idle_timeout=CLIENT_IDLE_TIMEOUT if is_client else SERVER_IDLE_TIMEOUT,
        max_datagram_size=DATAGRAM_SIZE - overhead,
        max_stream_data=STREAM_WINDOW,
        max_data=4 * STREAM_WINDOW,
    )
    return config


def server_configuration(tls: Any, overhead: int = 0) -> QuicConfiguration:
    """The server's configuration for a stream's TLSSettings (None: V2Ray's internal one)."""
    config = _base(False, tls, overhead)
    entries = tls.server_certificates if tls is not None else []
    if entries:
        entry = entries[0]
        config.certificate = entry.chain[0]
        config.certificate_chain = list(entry.chain[1:])
        config.private_key = entry.key
    else:
        config.certificate, config.private_key = internal_certificate()
    return config


def client_configuration(tls: Any, host: str, overhead: int = 0) -> QuicConfiguration:
    """The client's configuration reaching ``host`` (None: V2Ray's internal server name,
    no verification)."""
    config = _base(True, tls, overhead)
    if tls is None:
        config.server_name = INTERNAL_DOMAIN
        config.verify_mode = ssl.CERT_NONE
        return config
    config.server_name = tls.server_name or host.strip("[]")
    if tls.allow_insecure:
        config.verify_mode = ssl.CERT_NONE
        return config
    trusted = [cert for entry in tls.certificates for cert in entry.chain]
    if trusted:
        config.cadata = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in trusted)
    return config
