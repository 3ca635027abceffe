"""Which module implements each protocol name.

An inbound module provides ``parse_inbound_settings(node) -> settings`` and
``build_inbound_factory(inbound: InboundConfig, ctx: BuildContext) -> IProtocolFactory``.
An outbound module provides ``parse_outbound_settings(node) -> settings`` and
``build_outbound(outbound: OutboundConfig, ctx: BuildContext) -> IOutbound``.
Modules are imported only when a config names them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

INBOUND_MODULES = {
    "socks": "vtwist.proxy.socks.inbound",
    "vmess": "vtwist.proxy.vmess.inbound",
}

OUTBOUND_MODULES = {
    "freedom": "vtwist.proxy.freedom",
    "blackhole": "vtwist.proxy.blackhole",
    "vmess": "vtwist.proxy.vmess.outbound",
}


def inbound_module(protocol: str) -> ModuleType | None:
    """The module for inbound ``protocol``, or None if vtwist has none."""
    name = INBOUND_MODULES.get(protocol)
    return importlib.import_module(name) if name else None


def outbound_module(protocol: str) -> ModuleType | None:
    """The module for outbound ``protocol``, or None if vtwist has none."""
    name = OUTBOUND_MODULES.get(protocol)
    return importlib.import_module(name) if name else None


#: The module that parses streamSettings (``parse_stream_settings``) and knows the network
#: settings keys (its ``registry``). Reached only through the two hooks below, so that the
#: config layer never imports the transport layer.
STREAM_SETTINGS_MODULE = "vtwist.transport.settings"


def stream_settings_parser() -> Callable[..., Any]:
    """``parse_stream_settings(node, inbound, transport=None) -> StreamSettings``."""
    return importlib.import_module(STREAM_SETTINGS_MODULE).parse_stream_settings  # type: ignore[no-any-return]


def transport_keys() -> tuple[str, ...]:
    """The network settings keys a top-level ``transport`` object may hold."""
    module = importlib.import_module(STREAM_SETTINGS_MODULE)
    return module.registry.settings_keys()  # type: ignore[no-any-return]
