"""The global reactor, imported only when a caller did not pass one (keeps imports lazy)."""

from __future__ import annotations

from typing import Any


def resolve_reactor(reactor: Any = None) -> Any:
    """``reactor`` itself, or the global Twisted reactor when it is None."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        return default_reactor
    return reactor
