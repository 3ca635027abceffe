"""grpcSettings (``network: "grpc"``, alias ``gun``): plain data and its parser (no Twisted).

``serviceName`` names the gRPC service: requests go to ``/<serviceName>/Tun`` (``TunMulti``
with Xray's ``multiMode``). Xray's custom paths are understood too: a ``serviceName``
starting with ``/`` is a full path, ``/a/b/Tun1`` (the client's method is its last part;
a server may give two, ``/a/b/Tun1|Multi1``). ``authority`` (Xray) is the ``:authority``
of the client's requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from vtwist.config.node import Node

#: Xray options vtwist accepts and ignores (connection health checks, windows, user agent).
IGNORED = ("idle_timeout", "health_check_timeout", "permit_without_stream",
           "initial_windows_size", "user_agent")


def _escape(part: str) -> str:
    """Go's url.PathEscape (close enough: keeps the RFC 3986 unreserved and sub-delims)."""
    return quote(part, safe="!$&'()*+,;=:@")


@dataclass
class GRPCSettings:
    """Validated ``grpcSettings``."""

    service_name: str = ""
    multi_mode: bool = False
    authority: str = ""

    @property
    def service(self) -> str:
        """The service part of the path (Xray's getServiceName)."""
        name = self.service_name
        if not name.startswith("/"):
            return _escape(name)
        last = max(name.rfind("/"), 1)
        return "/".join(_escape(part) for part in name[1:last].split("/"))

    def _methods(self) -> list[str]:
        name = self.service_name
        if not name.startswith("/"):
            return ["Tun", "TunMulti"]
        return [_escape(part) for part in name[name.rfind("/") + 1:].split("|")]

    @property
    def tun_path(self) -> str:
        """The path of the ``Tun`` method (one Hunk per message)."""
        return f"/{self.service}/{self._methods()[0]}"

    @property
    def multi_path(self) -> str:
        """The path of the ``TunMulti`` method (one MultiHunk per message)."""
        methods = self._methods()
        return f"/{self.service}/{methods[1] if len(methods) > 1 else methods[0]}"

    @property
    def client_path(self) -> str:
        """The path a client's requests go to (multi mode: ``TunMulti``)."""
        return self.multi_path if self.multi_mode else self.tun_path


def parse_grpc_settings(node: Node, inbound: bool) -> GRPCSettings:
    """Validate ``grpcSettings``; Xray's tuning options are accepted with a warning."""
    node = node.or_empty()
    settings = GRPCSettings(service_name=node.str("serviceName", ""),
                            multi_mode=node.bool("multiMode", False),
                            authority=node.str("authority", ""))
    for ignored in IGNORED:
        if node.has(ignored):
            node.warn(f"{ignored} is not supported by vtwist; ignored")
    node.warn_unknown()
    return settings
