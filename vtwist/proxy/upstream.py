"""Upstream proxy servers as the socks and http outbounds list them (no Twisted here).

Both outbounds read V2Ray 4.34's ``servers`` [{``address``, ``port``, ``users`` [{``user``,
``pass``, ``level``, ``email``}]}] and pick as V2Ray's ``protocol.ServerPicker`` does: the
servers in turn (round robin), one of a server's users at random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from vtwist.config.node import Node


@dataclass(frozen=True)
class UpstreamUser:
    """One ``users[]`` entry: the account and its policy level."""

    user: str
    password: str = ""
    level: int = 0
    email: str = ""


@dataclass
class UpstreamServer:
    """One ``servers[]`` entry."""

    address: str
    port: int
    users: list[UpstreamUser] = field(default_factory=list)

    def pick_user(self, choice: random.Random | None = None) -> UpstreamUser | None:
        """A user at random (V2Ray's ``PickUser``), or None when the server has none."""
        if not self.users:
            return None
        return (choice or random).choice(self.users)


@dataclass
class UpstreamSettings:
    """Validated ``settings`` of a socks or http outbound."""

    servers: list[UpstreamServer] = field(default_factory=list)


def parse_user(node: Node, max_bytes: int | None = None) -> UpstreamUser:
    """One ``users[]`` entry; ``max_bytes`` bounds the user name and password (SOCKS: 255)."""
    user = node.str("user", "")
    password = node.str("pass", "")
    if max_bytes is not None:
        if len(user.encode()) > max_bytes:
            raise node.error(f"expected a user name of at most {max_bytes} bytes", "user")
        if len(password.encode()) > max_bytes:
            raise node.error(f"expected a password of at most {max_bytes} bytes", "pass")
    level = node.int("level", 0, 0)
    email = node.str("email", "")
    node.warn_unknown()
    return UpstreamUser(user, password, level, email)


def parse_servers(node: Node, max_bytes: int | None = None) -> UpstreamSettings:
    """``settings.servers[]`` of a socks or http outbound (at least one server)."""
    settings = UpstreamSettings()
    servers = node.get("servers")
    for server in servers.items():
        address = server.str("address")
        if not address.strip():
            raise server.error("must not be empty", "address")
        port = server.port("port")
        users = [parse_user(u, max_bytes) for u in server.get("users", []).items()]
        server.warn_unknown()
        settings.servers.append(UpstreamServer(address.strip().strip("[]"), port, users))
    if not settings.servers:
        raise servers.error("expected at least one server")
    node.warn_unknown()
    return settings


class ServerPicker:
    """The servers in turn, as V2Ray's round-robin ``ServerPicker``."""

    def __init__(self, servers: list[UpstreamServer]) -> None:
        if not servers:
            raise ValueError("no servers")
        self.servers = servers
        self._next = 0

    def pick(self) -> UpstreamServer:
        """The next server."""
        server = self.servers[self._next % len(self.servers)]
        self._next += 1
        return server
