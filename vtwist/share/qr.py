"""QR codes for share links: a terminal drawing and a PNG (zlib only, no Pillow).

The module matrix comes from the ``qrcode`` package (``pip install vtwist[qr]``).
"""

from __future__ import annotations

import struct
import zlib

Matrix = list[list[bool]]


def qr_matrix(text: str, border: int = 4) -> Matrix:
    """The QR modules for ``text`` (True = dark), with a quiet zone of ``border`` modules."""
    try:
        import qrcode
        from qrcode.constants import ERROR_CORRECT_M
    except ImportError:
        raise RuntimeError("QR codes need the qrcode package (vtwist's [qr] extra): "
                           "pip install qrcode") from None
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=border)
    code.add_data(text)
    code.make(fit=True)
    return [[bool(m) for m in row] for row in code.get_matrix()]


# (top, bottom) module -> half-block character; light (not dark) modules are drawn as ink.
_HALF_BLOCKS = {(False, False): "\u2588", (False, True): "\u2580",
                (True, False): "\u2584", (True, True): " "}


def render_terminal(matrix: Matrix, dark_background: bool = True) -> str:
    """Two module rows per text line with half blocks.

    On a dark background the light modules are drawn as ink; otherwise the dark ones.
    """
    if not dark_background:
        matrix = [[not m for m in row] for row in matrix]
    lines = []
    rows = matrix + ([[False] * len(matrix[0])] if len(matrix) % 2 else [])
    for top, bottom in zip(rows[0::2], rows[1::2], strict=True):
        lines.append("".join(_HALF_BLOCKS[pair] for pair in zip(top, bottom, strict=True)))
    return "\n".join(lines) + "\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(matrix: Matrix, scale: int = 8) -> bytes:
    """An 8-bit greyscale PNG of ``matrix``, ``scale`` pixels per module."""
    size = len(matrix) * scale
    raw = bytearray()
    for row in matrix:
        line = b"\x00" + b"".join((b"\x00" if dark else b"\xff") * scale for dark in row)
        raw += line * scale
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + _chunk(b"IEND", b""))
