"""The keys V2Ray 4.34 knows at the common places of a config, for "did you mean" hints.

An unknown key is compared (``difflib``) with the keys read at its object plus, where the
path matches a pattern here, the keys V2Ray 4.34's own config structs have there
(``infra/conf``): the legacy top-level ``port``, ``inbound``, ``outbound``,
``inboundDetour`` and ``outboundDetour`` are real keys, not typos.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

TOP = ("log", "api", "dns", "stats", "routing", "policy", "reverse", "inbounds", "outbounds",
       "transport", "port", "inbound", "outbound", "inboundDetour", "outboundDetour")
INBOUND = ("protocol", "port", "listen", "settings", "tag", "allocate", "streamSettings",
           "domainOverride", "sniffing")
OUTBOUND = ("protocol", "sendThrough", "tag", "settings", "streamSettings", "proxySettings",
            "mux")
STREAM = ("network", "security", "tlsSettings", "tcpSettings", "kcpSettings", "wsSettings",
          "httpSettings", "dsSettings", "quicSettings", "sockopt")

_KNOWN: list[tuple[re.Pattern[str], tuple[str, ...]]] = [
    (re.compile(p), keys) for p, keys in (
        (r"", TOP),
        (r"(inbounds|inboundDetour)\[\d+\]|inbound", INBOUND),
        (r"(outbounds|outboundDetour)\[\d+\]|outbound", OUTBOUND),
        (r".*\bstreamSettings", STREAM),
        (r".*\bsniffing", ("enabled", "destOverride")),
        (r".*\ballocate", ("strategy", "concurrency", "refresh")),
        (r".*\bmux", ("enabled", "concurrency")),
        (r"log", ("access", "error", "loglevel")),
        (r"policy", ("levels", "system")),
        (r"policy\.levels\.[^.]+", ("handshake", "connIdle", "uplinkOnly", "downlinkOnly",
                                    "statsUserUplink", "statsUserDownlink", "bufferSize")),
        (r"routing", ("domainStrategy", "rules", "balancers")),
    )
]


def known_at(path: str) -> tuple[str, ...]:
    """V2Ray 4.34's keys for the object at ``path`` (empty where this table has none)."""
    for pattern, keys in _KNOWN:
        if pattern.fullmatch(path):
            return keys
    return ()


def suggest(key: str, candidates: Iterable[str]) -> str | None:
    """The known key ``key`` was most likely meant to be, or None."""
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    if key.lower() in lowered:
        return lowered[key.lower()]
    found = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
    return found[0] if found else None
