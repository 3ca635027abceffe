"""``fallbacks`` as V2Ray 4.34's ``infra/conf/vless.go`` reads them (no Twisted here).

Each entry: ``alpn``, ``path`` (empty or starting with ``/``), ``type`` (``tcp``/``unix``,
found from ``dest`` when empty), ``dest`` (a port, ``host:port``, or a Unix socket path,
``@name`` for an abstract one and ``@@name`` for one padded to the full sockaddr length, as
HAProxy writes it), ``xver`` (0, 1 or 2: the PROXY protocol version to prepend).
"""

from __future__ import annotations

from dataclasses import dataclass

from vtwist.config.node import Node

#: Length of ``sockaddr_un.sun_path`` on Linux: ``@@`` names are padded to it.
UNIX_PATH_MAX = 108


@dataclass(frozen=True)
class Fallback:
    """One fallback: where a connection with this ALPN and HTTP path goes."""

    alpn: str = ""
    path: str = ""
    dest: str = ""
    xver: int = 0
    #: ``tcp`` (dest is host:port) or ``unix`` (dest is a socket path)
    type: str = "tcp"

    @property
    def host_port(self) -> tuple[str, int]:
        """``dest`` of a tcp fallback as (host, port)."""
        host, _, port = self.dest.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def unix_address(self) -> str:
        """``dest`` of a unix fallback as the kernel sees it: ``@`` means the abstract
        namespace (a leading NUL byte)."""
        if self.dest.startswith("@"):
            return "\0" + self.dest[1:]
        return self.dest


def _split_host_port(text: str) -> tuple[str, int] | None:
    """Go's ``net.SplitHostPort`` plus a numeric port, or None."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1:end + 2] != ":":
            return None
        host, port = text[1:end], text[end + 2:]
    else:
        host, sep, port = text.rpartition(":")
        if not sep or ":" in host:
            return None
    if not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def parse_fallback(node: Node) -> Fallback:
    """One ``fallbacks[]`` entry, completed as 4.34 completes it."""
    alpn = node.str("alpn", "")
    path = node.str("path", "")
    kind = node.str("type", "")
    raw = node.get("dest", "").value
    if isinstance(raw, bool):
        dest = ""
    elif isinstance(raw, int) and 0 <= raw <= 65535:
        dest = str(raw)
    elif isinstance(raw, str):
        dest = raw
    else:
        dest = ""
    xver_node = node.get("xver", 0)
    xver = xver_node.as_int(0)
    node.warn_unknown()
    if path and not path.startswith("/"):
        raise node.error('must be empty or start with "/"', "path")
    if not kind and dest:
        if dest == "serve-ws-none":
            raise node.error('"serve-ws-none" is not supported by vtwist', "dest")
        if dest[0] in "@/":
            kind = "unix"
            if dest.startswith("@@"):
                dest = dest[1:].ljust(UNIX_PATH_MAX, "\0")
        else:
            if dest.isdigit():
                dest = "127.0.0.1:" + dest
            if _split_host_port(dest) is not None:
                kind = "tcp"
    if kind not in ("tcp", "unix") or not dest:
        raise node.error('expected a port, "host:port" or a Unix socket path', "dest")
    if kind == "tcp" and _split_host_port(dest) is None:
        raise node.error(f'expected "host:port" for a tcp fallback, got {dest!r}', "dest")
    if xver > 2:
        raise xver_node.error("invalid PROXY protocol version: expected 0, 1 or 2")
    return Fallback(alpn, path, dest, xver, kind)


def parse_fallbacks(node: Node) -> list[Fallback]:
    """The ``fallbacks`` array (an absent or empty one means no fallbacks)."""
    if node.value is None:
        return []
    return [parse_fallback(item) for item in node.items()]
