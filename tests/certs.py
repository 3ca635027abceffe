"""Test certificates: a throwaway CA and server certificates it signs (``cryptography``).

``make_ca()`` gives a :class:`CA`; ``ca.issue("example.test", "127.0.0.1")`` a :class:`Cert`
whose ``cert_pem``/``key_pem`` are bytes and ``write(dir)`` stores them as files. Keys are
EC P-256 so making them is fast; everything is cached per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from vtwist.genconfig import (
    certificate_builder,
    generate_key,
    private_key_pem,
    server_certificate_builder,
)


@dataclass
class Cert:
    """A certificate and its key, in PEM."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)

    def write(self, directory: str, name: str) -> tuple[str, str]:
        """Write ``name.crt`` and ``name.key`` into ``directory``; return their paths."""
        cert_path = os.path.join(directory, name + ".crt")
        key_path = os.path.join(directory, name + ".key")
        with open(cert_path, "wb") as f:
            f.write(self.cert_pem)
        with open(key_path, "wb") as f:
            f.write(self.key_pem)
        return cert_path, key_path


class CA(Cert):
    """A self-signed certificate authority that issues server certificates."""

    def issue(self, *names: str, days: int = 30) -> Cert:
        """A server certificate for DNS names and/or IP addresses ``names``."""
        key = generate_key()
        cert = (
            server_certificate_builder(names, key.public_key(), days, issuer=self.cert.subject)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return Cert(cert, key)


def make_ca(name: str = "vtwist test CA") -> CA:
    """A new self-signed CA."""
    key = generate_key()
    cert = (
        certificate_builder(name, key.public_key(), 365)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return CA(cert, key)


@cache
def shared_ca() -> CA:
    """One CA per test process."""
    return make_ca()


@cache
def shared_server_cert(*names: str) -> Cert:
    """A server certificate from :func:`shared_ca` for ``names`` (cached)."""
    return shared_ca().issue(*names)


def pem_lines(pem: bytes) -> list[str]:
    """PEM as V2Ray's inline ``certificate``/``key`` line array."""
    return pem.decode().strip().splitlines()
