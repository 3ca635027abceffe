"""httpSettings (``network: "h2"`` or ``"http"``): plain data and its parser (no Twisted)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from vtwist.config.node import Node

#: V2Ray 4.34's hosts when ``host`` is empty (``transport/internet/http/config.go``).
DEFAULT_HOSTS = ("www.example.com",)


@dataclass
class HTTPSettings:
    """Validated ``httpSettings``: the request's possible hosts and its path."""

    hosts: list[str] = field(default_factory=lambda: list(DEFAULT_HOSTS))
    path: str = "/"

    def random_host(self, rng: random.Random | None = None) -> str:
        """A host for a new request, chosen at random as V2Ray's client does."""
        return (rng or random).choice(self.hosts)

    def valid_host(self, host: str) -> bool:
        """True when the server accepts a request for ``host`` (exact match, as V2Ray)."""
        return host in self.hosts


def normalize_path(path: str) -> str:
    """V2Ray's getNormalizedPath: empty is "/", a leading "/" is added."""
    if not path:
        return "/"
    return path if path.startswith("/") else "/" + path


def parse_http_settings(node: Node, inbound: bool) -> HTTPSettings:
    """Validate ``httpSettings`` (``host``: V2Ray's StringList, a list or a comma list)."""
    node = node.or_empty()
    hosts = [h.strip() for h in node.comma_list("host")]
    settings = HTTPSettings(hosts=[h for h in hosts if h] or list(DEFAULT_HOSTS),
                            path=normalize_path(node.str("path", "")))
    for later in ("method", "headers", "read_idle_timeout", "health_check_timeout"):
        if node.has(later):
            node.warn(f"{later} is not in V2Ray 4.34's httpSettings; ignored")
    node.warn_unknown()
    return settings
