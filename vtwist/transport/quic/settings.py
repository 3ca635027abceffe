"""quicSettings: plain data and its parser (no Twisted).

``{"security": "none" | "aes-128-gcm" | "chacha20-poly1305", "key": "...",
"header": {"type": "none" | "srtp" | "utp" | "wechat-video" | "dtls" | "wireguard"}}``, as
V2Ray 4.34 reads it. V2Ray takes any other ``security`` as none; vtwist refuses it. Mind
4.34's quirk: with no ``quicSettings`` object at all, packets are sealed with AES-128-GCM
and an empty key (``{}`` means security none).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from vtwist.config.node import Node
from vtwist.transport.kcp.obfs import HEADER_TYPES

SECURITIES = ("none", "aes-128-gcm", "chacha20-poly1305")


@dataclass(frozen=True)
class QUICSettings:
    """Validated ``quicSettings``."""

    security: str = "none"
    key: str = ""
    header_type: str = "none"

    @property
    def obfuscated(self) -> bool:
        """True when datagrams are not plain QUIC (a header or an AEAD wraps them)."""
        return self.security != "none" or self.header_type != "none"


def absent_security(machine: str | None = None) -> str:
    """V2Ray 4.34's security when there is no ``quicSettings`` at all: its protobuf default
    (AUTO) means AES-128-GCM on amd64, arm64 and s390x, ChaCha20-Poly1305 elsewhere."""
    machine = (machine if machine is not None else platform.machine()).lower()
    if machine in ("x86_64", "amd64", "aarch64", "arm64", "s390x"):
        return "aes-128-gcm"
    return "chacha20-poly1305"


def parse_quic_settings(node: Node, inbound: bool) -> QUICSettings:
    """Validate ``quicSettings``. Absent (not even ``{}``), V2Ray 4.34 seals the packets
    with an empty key (:func:`absent_security`); vtwist does the same."""
    from vtwist.transport.settings import ABSENT

    if node.value is ABSENT:
        return QUICSettings(security=absent_security())
    node = node.or_empty()
    security = node.str("security", "none", lower=True) or "none"
    if security not in SECURITIES:
        raise node.error(f"expected one of {', '.join(SECURITIES)}, got {security!r}",
                         "security")
    key = node.str("key", "")
    header_type = "none"
    if node.has("header"):
        header = node.get("header").or_empty()
        header_type = header.str("type", "none", lower=True) or "none"
        if header_type not in HEADER_TYPES:
            raise header.error(f"expected one of {', '.join(HEADER_TYPES)}, "
                               f"got {header_type!r}", "type")
        header.warn_unknown()
    node.warn_unknown()
    return QUICSettings(security, key, header_type)
