"""What a share link's ``type``/``host``/``path`` mean for the http (h2) network (sans-IO):
``host`` is a comma list of hosts, ``path`` the path, ``type`` means nothing."""

from __future__ import annotations

from typing import Any

from vtwist.transport.linkfields import (
    Fields,
    LinkFields,
    Warn,
    drop_extra,
    join_list,
    obj,
    split_list,
    string_list,
    text,
)


class HTTPLinkFields(LinkFields):
    """http/h2: comma lists of hosts, and the path."""

    label = "h2"
    random_path = True

    def canonical(self, header: str, host: str, path: str) -> Fields:
        """No header type; hosts as a clean comma list."""
        return "none", join_list(split_list(host)), path

    def sni(self, host: str) -> str:
        """The first host."""
        hosts = split_list(host)
        return hosts[0] if hosts else ""

    def to_settings(self, header: str, host: str, path: str) -> dict[str, Any] | None:
        """``{"host": [...], "path": ...}``."""
        settings: dict[str, Any] = {}
        if host:
            settings["host"] = split_list(host)
        if path:
            settings["path"] = path
        return settings

    def from_settings(self, value: Any, where: str, warn: Warn) -> Fields:
        """The hosts and the path."""
        settings = obj(value, where)
        host = join_list([h for item in string_list(settings.get("host"), f"{where}.host")
                          for h in split_list(item)])
        path = text(settings, "path")
        drop_extra(settings, ("host", "path"), where, warn)
        return "none", host, path


HTTP = HTTPLinkFields()
