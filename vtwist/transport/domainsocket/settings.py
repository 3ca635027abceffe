"""dsSettings: plain data, its parser and the socket address it names (no Twisted).

``{"path": "/run/v2ray.sock" | "@name", "abstract": bool, "padding": bool}``. As in V2Ray
4.34: ``abstract`` puts the path in Linux's abstract namespace (``@name`` does too), and
``padding`` pads an abstract name with NUL bytes to the full 108-byte ``sun_path`` (the
address HAProxy and some others use for abstract names; without it the name is just its
bytes). Inbound ``listen`` addresses starting with ``/`` or ``@`` (``@@name``: padded) are
read by :func:`listen_address`.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtwist.config.node import Node

#: sizeof(sockaddr_un.sun_path) on Linux.
SUN_PATH_SIZE = 108


@dataclass(frozen=True)
class DSSettings:
    """Validated ``dsSettings``."""

    path: str = ""
    abstract: bool = False
    padding: bool = False

    @property
    def address(self) -> str:
        """The socket address for Python's ``AF_UNIX``: a file path, or a NUL-led abstract
        name (padded with NULs to 108 bytes with ``padding``)."""
        return socket_address(self.path, self.abstract, self.padding)


def socket_address(path: str, abstract: bool, padding: bool) -> str:
    """V2Ray's GetUnixAddr as the string Python's ``AF_UNIX`` sockets take."""
    if not path:
        raise ValueError("empty domain socket path")
    if abstract and not path.startswith("@"):
        path = "@" + path
    if not path.startswith("@"):
        return path
    name = "\0" + path[1:]
    if abstract and padding:
        name = name.ljust(SUN_PATH_SIZE, "\0")
    return name


def listen_address(listen: str) -> str | None:
    """The socket address for an inbound ``listen`` naming a UNIX socket (4.34: ``/path``,
    ``@name``, ``@@name`` padded), or None for an IP address or host name."""
    if listen.startswith("@@"):
        return ("\0" + listen[2:]).ljust(SUN_PATH_SIZE, "\0")
    if listen.startswith("@"):
        return "\0" + listen[1:]
    if listen.startswith("/"):
        return listen
    return None


def inbound_address(listen: str, stream: object) -> str | None:
    """The UNIX socket address an inbound listens on: dsSettings' with the domainsocket
    network, else its ``listen`` read by :func:`listen_address` (None: not a UNIX one)."""
    if getattr(stream, "network", "tcp") == "domainsocket":
        settings = getattr(stream, "network_settings", {}).get("domainsocket")
        return settings.address if isinstance(settings, DSSettings) else None
    return listen_address(listen)


def describe(address: str) -> str:
    """A socket address as V2Ray writes it (``@name`` for an abstract one)."""
    return "@" + address[1:].rstrip("\0") if address.startswith("\0") else address


def parse_ds_settings(node: Node, inbound: bool) -> DSSettings:
    """Validate ``dsSettings`` (``node`` may wrap None: the path is still required)."""
    node = node.or_empty()
    path = node.str("path", "")
    if not path:
        raise node.error("is required (the socket's file path or abstract name)", "path")
    abstract = node.bool("abstract", False)
    padding = node.bool("padding", False)
    if padding and not abstract:
        node.warn("padding only applies with abstract: true (as in V2Ray); ignored")
    settings = DSSettings(path, abstract, padding)
    encoded = settings.address.encode()
    if len(encoded) > SUN_PATH_SIZE or (len(encoded) == SUN_PATH_SIZE
                                        and not encoded.startswith(b"\0")):
        raise node.error(f"is longer than a socket address allows ({SUN_PATH_SIZE - 1} "
                         "bytes)", "path")
    node.warn_unknown()
    return settings
