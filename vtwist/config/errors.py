"""Configuration errors that name the JSON path and what was expected."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem at a JSON path, e.g. ``outbounds[0].settings.vnext[0].port``."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message
