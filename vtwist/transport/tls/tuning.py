"""Handshake cost settings for the OpenSSL contexts TLS uses, each set once per context.

* Key exchange groups: X25519, then P-256 and P-384 (what Go's crypto/tls, and with it
  V2Ray 4.34, offers and accepts). OpenSSL 3.5+ otherwise leads with the hybrid
  X25519MLKEM768 and sends two key shares in every ClientHello (1.5 KB; an ML-KEM key pair
  on the client, an encapsulation on the server): about a third of a resumed handshake's
  CPU between two vtwist processes.
* TLS 1.3 cipher suites: AES-128-GCM first, as Go orders them on AES-NI hardware (OpenSSL
  leads with AES-256-GCM; a server prefers its own order).

A server picks the ALPN protocol in a cffi callback of its own (:func:`select_alpn`).
A verifying client checks the server's name in OpenSSL itself (:func:`expect_peer_name`,
set once on the context: ``X509_VERIFY_PARAM_set1_host``/``_set1_ip``, SAN only, no partial
wildcards, as service-identity and Go check it) instead of Twisted's per-connection Python
verify callback; :func:`verify_error` says why a verification failed.

pyOpenSSL has no public calls for these; they go through its cffi binding when that has
them (:data:`NATIVE`), and callers fall back to Twisted's ways otherwise.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from OpenSSL import SSL

#: The key exchange groups, in order of preference (OpenSSL names).
GROUPS = b"X25519:P-256:P-384"
#: The TLS 1.3 cipher suites, in order of preference.
TLS13_CIPHERSUITES = b"TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384"


_NEEDED = ("SSL_CTX_set1_curves_list", "SSL_CTX_get0_param", "X509_VERIFY_PARAM_set1_host",
           "X509_VERIFY_PARAM_set1_ip", "X509_VERIFY_PARAM_set_hostflags",
           "SSL_get_verify_result", "X509_verify_cert_error_string",
           "X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS", "X509_CHECK_FLAG_NEVER_CHECK_SUBJECT",
           "X509_V_ERR_HOSTNAME_MISMATCH", "X509_V_ERR_IP_ADDRESS_MISMATCH")


def _binding() -> tuple[Any, Any]:
    try:
        from OpenSSL._util import ffi, lib
    except ImportError:  # pragma: no cover - a pyOpenSSL without its cffi binding
        return None, None
    if not all(hasattr(lib, name) for name in _NEEDED):  # pragma: no cover
        return None, None
    return ffi, lib


_FFI, _LIB = _binding()
#: True when the binding has every call used here (else: OpenSSL's defaults, Twisted's checks).
NATIVE = _LIB is not None


def set_groups(context: SSL.Context, groups: bytes = GROUPS) -> bool:
    """Offer (client) and accept (server) only ``groups``; False when it could not be set."""
    if _LIB is None:  # pragma: no cover - depends on the pyOpenSSL build
        return False
    return bool(_LIB.SSL_CTX_set1_curves_list(context._context, groups) == 1)


def tune_context(context: SSL.Context) -> SSL.Context:
    """Set the groups and the TLS 1.3 cipher suites of ``context`` (before its first use)."""
    set_groups(context)
    try:
        context.set_tls13_ciphersuites(TLS13_CIPHERSUITES)
    except (AttributeError, SSL.Error):  # pragma: no cover - an older pyOpenSSL/OpenSSL
        pass
    return context


def select_alpn(context: SSL.Context, protocols: list[bytes]) -> bool:
    """Make ``context`` (a server's) pick the first of ``protocols`` the client offers, or
    answer without ALPN when none is offered; False when the binding cannot (the caller then
    sets pyOpenSSL's callback).

    The callback is cffi's, straight from OpenSSL: no pyOpenSSL wrapper per handshake
    (which looks the connection up, copies the offer into a list of new strings and
    allocates the answer each time).
    """
    if _LIB is None or not hasattr(_LIB, "SSL_CTX_set_alpn_select_cb"):  # pragma: no cover
        return False
    answers = [(p, _FFI.new("unsigned char[]", p)) for p in protocols]
    ok, no_ack = _LIB.SSL_TLSEXT_ERR_OK, _LIB.SSL_TLSEXT_ERR_NOACK
    buffer = _FFI.buffer
    #: The answer per offer seen (clients of one kind send the same offer each time).
    chosen: dict[bytes, tuple[Any, int] | None] = {}

    def choose(data: bytes) -> tuple[Any, int] | None:
        offered = []
        at, size = 0, len(data)
        while at < size:
            end = at + 1 + data[at]
            offered.append(data[at + 1:end])
            at = end
        for protocol, answer in answers:
            if protocol in offered:
                return answer, len(protocol)
        return None

    @_FFI.callback("int (*)(SSL *, unsigned char **, unsigned char *, unsigned char *,"
                   " unsigned int, void *)", error=no_ack)
    def select(ssl: Any, out: Any, outlen: Any, offer: Any, size: int, arg: Any) -> int:
        data = buffer(offer, size)[:]
        try:
            pick = chosen[data]
        except KeyError:
            pick = choose(data)
            if len(chosen) < 64:
                chosen[data] = pick
        if pick is None:
            return no_ack
        out[0], outlen[0] = pick
        return ok

    context._vtwist_alpn = (select, answers)  # kept alive as long as the context
    _LIB.SSL_CTX_set_alpn_select_cb(context._context, select, _FFI.NULL)
    return True


def expect_peer_name(context: SSL.Context, name: str) -> bool:
    """Make ``context`` (a verifying client's) fail the handshake unless the server's
    certificate names ``name`` (a DNS name, or an IP address in an iPAddress SAN). False when
    the binding cannot, so that the caller checks the name itself."""
    if _LIB is None:  # pragma: no cover - depends on the pyOpenSSL build
        return False
    param = _LIB.SSL_CTX_get0_param(context._context)
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        ip = None
    if ip is not None:
        packed = ip.packed
        return bool(_LIB.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed)) == 1)
    host = name.encode("idna")
    _LIB.X509_VERIFY_PARAM_set_hostflags(
        param, _LIB.X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS
        | _LIB.X509_CHECK_FLAG_NEVER_CHECK_SUBJECT)
    return bool(_LIB.X509_VERIFY_PARAM_set1_host(param, host, len(host)) == 1)


def verify_error(connection: SSL.Connection) -> tuple[bool, str] | None:
    """Why the peer's certificate failed verification on ``connection``: (name mismatch?,
    OpenSSL's text), or None when it did not fail (or cannot be told)."""
    if _LIB is None or connection is None:  # pragma: no cover - depends on the build
        return None
    code = _LIB.SSL_get_verify_result(connection._ssl)
    if code == 0:
        return None
    text = _FFI.string(_LIB.X509_verify_cert_error_string(code)).decode("ascii", "replace")
    mismatch = code in (_LIB.X509_V_ERR_HOSTNAME_MISMATCH, _LIB.X509_V_ERR_IP_ADDRESS_MISMATCH)
    return mismatch, text
