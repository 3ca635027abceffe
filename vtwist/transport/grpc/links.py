"""What a share link's fields mean for the grpc network (sans-IO).

v2rayN's vmess links put the service name in ``path``, the mode (``gun``/``multi``) in
``type`` and the authority in ``host``; the URL form (vless/trojan, Xray's share-link
format) says ``serviceName``, ``mode`` and ``authority``.
"""

from __future__ import annotations

from typing import Any

from vtwist.transport.linkfields import (
    Fields,
    LinkFieldError,
    LinkFields,
    Warn,
    drop_extra,
    obj,
    text,
)

MODES = ("gun", "multi")


class GRPCLinkFields(LinkFields):
    """grpc: ``type`` the mode, ``host`` the authority, ``path`` the service name."""

    label = "grpc"
    #: "none" (a link's type left empty) stands for gun.
    header_types = ("none", *MODES)

    def header(self, value: str, key: str) -> str:
        """none (not given), gun or multi (Xray's guna is gun)."""
        mode = value.lower() or "none"
        if mode == "guna":
            return "gun"
        if mode not in self.header_types:
            raise LinkFieldError(key, f"unknown grpc mode {value!r} (expected gun or multi)")
        return mode

    def canonical(self, header: str, host: str, path: str) -> Fields:
        """The mode as gun or multi (none is gun)."""
        mode = self.header(header, "type")
        return ("gun" if mode == "none" else mode), host, path

    def to_settings(self, header: str, host: str, path: str) -> dict[str, Any] | None:
        """``{"serviceName": ..., "multiMode": ..., "authority": ...}``."""
        settings: dict[str, Any] = {"serviceName": path}
        if header == "multi":
            settings["multiMode"] = True
        if host:
            settings["authority"] = host
        return settings

    def from_settings(self, value: Any, where: str, warn: Warn) -> Fields:
        """The mode, the authority and the service name."""
        settings = obj(value, where)
        multi = settings.get("multiMode", False)
        if not isinstance(multi, bool):
            raise LinkFieldError(f"{where}.multiMode", "expected true or false")
        drop_extra(settings, ("serviceName", "multiMode", "authority"), where, warn)
        return ("multi" if multi else "gun"), text(settings, "authority"), \
            text(settings, "serviceName")

    def to_query(self, header: str, host: str, path: str) -> dict[str, str]:
        """``serviceName``, ``mode``, then ``authority``."""
        query = {"serviceName": path, "mode": header}
        if host:
            query["authority"] = host
        return query

    def fields_from_query(self, query: dict[str, str]) -> Fields:
        """``mode``, ``authority`` (or ``host``), ``serviceName`` (or ``path``)."""
        return (query.get("mode", ""), query.get("authority", "") or query.get("host", ""),
                query.get("serviceName", "") or query.get("path", ""))


GRPC = GRPCLinkFields()
