"""Compatibility names: streamSettings now live in :mod:`vtwist.transport.settings` and the
layered endpoints in :mod:`vtwist.transport.stack`. New code imports from those."""

from __future__ import annotations

from vtwist.transport.settings import StreamSettings, parse_stream_settings
from vtwist.transport.stack import client_endpoint, server_endpoint

__all__ = ["StreamSettings", "client_endpoint", "parse_stream_settings", "server_endpoint"]
