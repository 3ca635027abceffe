"""Loads ``vmess-vectors.json`` (V2Ray 4.34's own output) for the VMess tests."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_CANDIDATES = (
    _HERE / "vectors" / "vmess-vectors.json",
    _HERE.parent.parent / "shared" / "protocol" / "vmess-vectors.json",
)


@lru_cache(maxsize=1)
def load() -> dict[str, Any]:
    """The vector file as a dict (the copy in tests/vectors/ first)."""
    for path in _CANDIDATES:
        if path.exists():
            return json.loads(path.read_text())
    raise FileNotFoundError("vmess-vectors.json not found in tests/vectors or ../shared")


def vector(name: str) -> dict[str, Any]:
    """One vector by name."""
    for v in load()["vectors"]:
        if v["name"] == name:
            return v
    raise KeyError(name)


def sessions() -> list[dict[str, Any]]:
    """All ``session_*`` vectors."""
    return [v for v in load()["vectors"] if v["name"].startswith("session_")]


def payload_writes(descriptions: list[str]) -> list[bytes]:
    """The payloads a vector's ``*_payload_writes`` describe."""
    out = []
    for text in descriptions:
        if text.startswith('ascii "'):
            out.append(text.split('"')[1].encode())
        else:
            n = int(text.split()[0])
            assert "i % 251" in text, text
            out.append(bytes(i % 251 for i in range(n)))
    return out


def decode_path_element(text: str) -> bytes:
    """``ascii:..`` / ``hex:..`` path elements of the kdf vector."""
    kind, _, value = text.partition(":")
    return value.encode() if kind == "ascii" else bytes.fromhex(value)
