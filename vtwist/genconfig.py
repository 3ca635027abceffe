"""Make configs: a VMess server (fresh UUID) with the share link that points at it, and a
client that serves SOCKS5 and sends everything through a link.

``vtwist config server`` uses :func:`server_config`: the inbound mirrors what
:meth:`vtwist.share.link.VmessLink.to_outbound` builds for the client, so the pair always
matches. Without a certificate a self-signed one is made (and the link gets
``allowInsecure``, since nothing can verify it). ``vtwist run --link`` and ``config
from-link`` use :func:`client_config`.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vtwist.share.errors import LinkError, Warn
from vtwist.share.link import VmessLink, link_from_json
from vtwist.share.outbound import link_to_outbound
from vtwist.share.subscription import pick_outbound, subscription_outbounds
from vtwist.transport import registry

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

@dataclass
class ServerSpec:
    """What ``config server`` was asked for."""

    transport: str = "tcp"
    header: str = "none"
    tls: bool = False
    port: int = 10086
    listen: str = "0.0.0.0"
    address: str = "127.0.0.1"
    user_id: str | None = None
    security: str = "auto"
    path: str = ""
    host: str = ""
    seed: str = ""
    sni: str = ""
    alpn: str = ""
    cert_file: str | None = None
    key_file: str | None = None
    name: str = ""


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 private key (fast to make)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_builder(common_name: str, public_key: ec.EllipticCurvePublicKey, days: int,
                        issuer: x509.Name | None = None) -> x509.CertificateBuilder:
    """A certificate for ``common_name`` valid from a day ago for ``days`` (no extensions).

    Without ``issuer`` it is self-issued.
    """
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def server_certificate_builder(names: Sequence[str], public_key: ec.EllipticCurvePublicKey,
                               days: int, issuer: x509.Name | None = None
                               ) -> x509.CertificateBuilder:
    """:func:`certificate_builder` for a server: CN ``names[0]``, every name (DNS name or IP)
    as a subject alternative name, and not a CA."""
    from cryptography import x509

    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            # An internationalised name goes in as its A-label (UnicodeError if it has none).
            alt.append(x509.DNSName(n if n.isascii() else n.encode("idna").decode("ascii")))
    return (
        certificate_builder(names[0], public_key, days, issuer)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )


def self_signed_certificate(names: list[str], days: int = 3650) -> tuple[str, str]:
    """A self-signed EC P-256 certificate for ``names`` (DNS names or IPs): (cert, key) PEM."""
    from cryptography.hazmat.primitives import hashes, serialization

    key = generate_key()
    cert = server_certificate_builder(names, key.public_key(), days).sign(key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return cert_pem, private_key_pem(key).decode("ascii")


def server_link(spec: ServerSpec) -> VmessLink:
    """The client link for ``spec`` (validated; raises :class:`LinkError`)."""
    transports = registry.link_names()
    network = registry.lookup(spec.transport) if spec.transport in transports else None
    fields = network.link_fields if network is not None else None
    if fields is None:
        raise LinkError("--transport", f"expected one of {', '.join(transports)}, "
                                       f"got {spec.transport!r}", "bad server options")
    header = spec.header or "none"
    if not fields.header_types and header != "none":
        raise LinkError("--header", f"{fields.label} has no header type", "bad server options")
    if fields.header_types and header not in fields.header_types:
        raise LinkError("--header", f"{fields.label} headers are "
                                    f"{', '.join(fields.header_types)}; got {header!r}",
                        "bad server options")
    if spec.seed and not fields.path_is_seed:
        raise LinkError("--seed", "only mKCP has a seed", "bad server options")
    path = spec.seed if fields.path_is_seed else spec.path
    if fields.random_path and not path:
        path = "/" + uuid.uuid4().hex[:8]
    insecure = spec.tls and not spec.cert_file
    name = spec.name or "vtwist-" + spec.transport + (
        f"-{header}" if header != "none" else "") + ("-tls" if spec.tls else "")
    data: dict[str, Any] = {
        "v": "2", "ps": name, "add": spec.address, "port": spec.port,
        "id": spec.user_id or str(uuid.uuid4()), "aid": 0, "scy": spec.security,
        "net": spec.transport, "type": header, "host": spec.host, "path": path,
        "tls": "tls" if spec.tls else "", "sni": spec.sni, "alpn": spec.alpn,
        "allowInsecure": insecure,
    }
    return link_from_json(data).canonical()


def server_config(spec: ServerSpec) -> tuple[dict[str, Any], VmessLink]:
    """A complete server config (vmess inbound, freedom outbound) and its link."""
    link = server_link(spec)
    stream = dict(link.to_outbound()["streamSettings"])
    if link.tls:
        tls: dict[str, Any] = {}
        if link.alpn:
            tls["alpn"] = link.alpn.split(",")
        if spec.cert_file:
            tls["certificates"] = [{"certificateFile": spec.cert_file,
                                    "keyFile": spec.key_file or spec.cert_file}]
        else:
            names = [n for n in (link.sni, spec.address) if n] or ["localhost"]
            try:
                cert, key = self_signed_certificate(list(dict.fromkeys(names)))
            except ValueError as e:  # a name no certificate can hold
                raise LinkError("--sni" if link.sni else "--address",
                                f"cannot go in a certificate: {e}", "bad server options") from None
            tls["certificates"] = [{"certificate": cert.splitlines(),
                                    "key": key.splitlines()}]
        stream["tlsSettings"] = tls
    config = {
        "log": {"loglevel": "info"},  # listening lines and refusals show
        "inbounds": [{
            "tag": "vmess-in",
            "listen": spec.listen,
            "port": link.port,
            "protocol": "vmess",
            "settings": {"clients": [{"id": link.id, "alterId": link.aid, "level": 0}]},
            "streamSettings": stream,
        }],
        "outbounds": [{"tag": "direct", "protocol": "freedom", "settings": {}}],
    }
    return config, link


# -- client configs --------------------------------------------------------------------
def parse_socks(socks: str) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[::1]:PORT"`` or ``"PORT"`` -> (host, port)."""
    text = socks.strip()
    if text.isdigit():
        host, port_text = "127.0.0.1", text
    elif text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise LinkError("--socks", f"expected HOST:PORT, got {socks!r}", "bad address")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise LinkError("--socks", f"expected HOST:PORT, got {socks!r}", "bad address")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise LinkError("--socks", f"port out of range 1-65535 in {socks!r}", "bad address")
    return host, int(port_text)


def client_config(outbound: dict[str, Any], socks: str = "127.0.0.1:1080") -> dict[str, Any]:
    """A complete client config: SOCKS5 inbound (UDP on), ``outbound``, then freedom."""
    host, port = parse_socks(socks)
    reply_ip = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    outbound = dict(outbound)
    if not outbound.get("tag"):
        outbound = {"protocol": outbound.get("protocol"), "tag": "proxy",
                    **{k: v for k, v in outbound.items() if k not in ("protocol", "tag")}}
    return {
        "log": {"loglevel": "info"},  # listening lines and refusals show
        "inbounds": [{
            "tag": "socks-in", "listen": host, "port": port, "protocol": "socks",
            "settings": {"auth": "noauth", "udp": True, "ip": reply_ip},
        }],
        "outbounds": [outbound, {"tag": "direct", "protocol": "freedom", "settings": {}}],
    }


#: The outbounds that carry Mux.Cool (links carry no mux setting; ``--mux`` adds it).
MUX_PROTOCOLS = ("vmess", "vless")


def with_mux(outbound: dict[str, Any], concurrency: int | None) -> dict[str, Any]:
    """``outbound`` with Mux.Cool on, ``concurrency`` sessions per connection (1…1024);
    None leaves it as it is."""
    if concurrency is None:
        return outbound
    if not 1 <= concurrency <= 1024:
        raise LinkError("--mux", f"concurrency must be 1-1024, got {concurrency}",
                        "bad mux concurrency")
    protocol = outbound.get("protocol")
    if protocol not in MUX_PROTOCOLS:
        raise LinkError("--mux", f"mux needs a vmess or vless link, not {protocol}",
                        "mux unsupported")
    return {**outbound, "mux": {"enabled": True, "concurrency": concurrency}}


def client_config_from_link(link: str, socks: str = "127.0.0.1:1080",
                            mux: int | None = None) -> dict[str, Any]:
    """The client config that serves SOCKS5 on ``socks`` and sends everything via ``link``
    (with ``mux``: over Mux.Cool, that many sessions per connection)."""
    return client_config(with_mux(link_to_outbound(link), mux), socks)


def client_config_from_subscription(text: str, pick: str | None = None,
                                    socks: str = "127.0.0.1:1080",
                                    warn: Warn | None = None,
                                    mux: int | None = None) -> dict[str, Any]:
    """The client config for the first link of a subscription, or the one named ``pick``."""
    outbound = pick_outbound(subscription_outbounds(text, warn), pick)
    return client_config(with_mux(outbound, mux), socks)
