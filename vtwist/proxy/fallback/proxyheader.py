"""PROXY protocol headers a fallback prepends (``xver`` 1: text v1, 2: binary v2), as V2Ray
4.34 writes them: the client's address, then the address it connected to (sans-IO)."""

from __future__ import annotations

import ipaddress
import struct

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header(version: int, source: tuple[str, int], dest: tuple[str, int]) -> bytes:
    """The v1 or v2 header for a TCP connection from ``source`` to ``dest`` (host, port);
    b"" for version 0."""
    if version == 0:
        return b""
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(dest[0])
    v6 = src.version == 6
    if version == 1:
        family = "TCP6" if v6 else "TCP4"
        return (f"PROXY {family} {source[0]} {dest[0]} {source[1]} {dest[1]}\r\n"
                .encode("ascii"))
    if version == 2:
        if v6:
            a = (src if src.version == 6 else ipaddress.IPv6Address(f"::ffff:{src}")).packed
            b = (dst if dst.version == 6 else ipaddress.IPv6Address(f"::ffff:{dst}")).packed
            head = b"\x21\x00\x24"
        else:
            a = src.packed
            b = dst.packed if dst.version == 4 else dst.packed[-4:]
            head = b"\x11\x00\x0c"
        return (V2_SIGNATURE + b"\x21" + head + a + b
                + struct.pack(">HH", source[1], dest[1]))
    raise ValueError(f"PROXY protocol version {version} (expected 0, 1 or 2)")
