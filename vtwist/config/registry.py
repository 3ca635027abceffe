"""Which module implements each protocol name.

An inbound module provides ``parse_inbound_settings(node) -> settings`` and
``build_inbound_factory(inbound: InboundConfig, ctx: BuildContext) -> IProtocolFactory``.
An outbound module provides ``parse_outbound_settings(node) -> settings`` and
``build_outbound(outbound: OutboundConfig, ctx: BuildContext) -> IOutbound``.
Modules are imported only when a config names them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

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
