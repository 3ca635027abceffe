"""Which module implements each protocol name.

An inbound module provides ``inbound``, an :class:`InboundSpec` (``IInbound``): its name,
``parse_settings(node) -> settings`` and ``build_factory(inbound: InboundConfig,
ctx: BuildContext) -> IProtocolFactory``.
An outbound module provides ``outbound``, an :class:`OutboundSpec`: its name,
``parse_settings(node) -> settings`` and ``build(outbound: OutboundConfig, ctx: BuildContext)
-> IOutbound``. Modules are imported only when a config names them; the modules named here
parse without Twisted, and import the runtime parts only to build.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from zope.interface import implementer

from vtwist.config.node import Node
from vtwist.interfaces import IInbound

INBOUND_MODULES = {
    "socks": "vtwist.proxy.socks.inbound",
    "vmess": "vtwist.proxy.vmess.inbound",
    "http": "vtwist.proxy.http.inbound",
    "dokodemo-door": "vtwist.proxy.dokodemo.settings",
    "shadowsocks": "vtwist.proxy.shadowsocks.inbound",
    "trojan": "vtwist.proxy.trojan.inbound",
    "vless": "vtwist.proxy.vless.inbound",
}

OUTBOUND_MODULES = {
    "freedom": "vtwist.proxy.freedom.settings",
    "blackhole": "vtwist.proxy.blackhole.settings",
    "vmess": "vtwist.proxy.vmess.settings",
    "socks": "vtwist.proxy.socks.outbound_settings",
    "http": "vtwist.proxy.http.outbound_settings",
    "shadowsocks": "vtwist.proxy.shadowsocks.settings",
    "trojan": "vtwist.proxy.trojan.settings",
    "vless": "vtwist.proxy.vless.settings",
    "dns": "vtwist.proxy.dns.settings",
}


def inbound_module(protocol: str) -> ModuleType | None:
    """The module for inbound ``protocol``, or None if vtwist has none."""
    name = INBOUND_MODULES.get(protocol)
    return importlib.import_module(name) if name else None


def outbound_module(protocol: str) -> ModuleType | None:
    """The module for outbound ``protocol``, or None if vtwist has none."""
    name = OUTBOUND_MODULES.get(protocol)
    return importlib.import_module(name) if name else None


@implementer(IInbound)
@dataclass(frozen=True)
class InboundSpec:
    """An inbound protocol as the registry knows it: its name, settings parser and factory
    builder. A protocol module names its spec ``inbound``; building may import Twisted,
    parsing must not."""

    name: str
    parse_settings: Callable[[Node], Any]
    build_factory: Callable[[Any, Any], Any]


@dataclass(frozen=True)
class OutboundSpec:
    """An outbound protocol as the registry knows it: name, settings parser, and the
    ``"module:function"`` that builds the ``IOutbound`` (imported only to build)."""

    name: str
    parse_settings: Callable[[Node], Any]
    builder: str

    def build(self, outbound: Any, ctx: Any) -> Any:
        """The ``IOutbound`` for ``outbound`` (an OutboundConfig) in ``ctx``."""
        module, _, name = self.builder.partition(":")
        return getattr(importlib.import_module(module), name)(outbound, ctx)


def outbound_spec(protocol: str) -> OutboundSpec | None:
    """The :class:`OutboundSpec` of outbound ``protocol``, or None if vtwist has none."""
    module = outbound_module(protocol)
    return module.outbound if module is not None else None  # type: ignore[no-any-return]


def inbound_spec(protocol: str) -> IInbound | None:
    """The :class:`InboundSpec` of inbound ``protocol``, or None if vtwist has none."""
    module = inbound_module(protocol)
    return module.inbound if module is not None else None  # type: ignore[no-any-return]


#: The module that parses ``routing`` (``parse_routing``), reached the same way.
ROUTING_MODULE = "vtwist.routing.parse"


def routing_parser() -> Callable[..., Any]:
    """``parse_routing(node, outbound_tags) -> Router``."""
    return importlib.import_module(ROUTING_MODULE).parse_routing  # type: ignore[no-any-return]


#: The module that parses the ``dns`` section (``parse_dns``), reached the same way.
DNS_MODULE = "vtwist.dns.settings"


def dns_parser() -> Callable[..., Any]:
    """``parse_dns(node) -> DnsConfig | None``."""
    return importlib.import_module(DNS_MODULE).parse_dns  # type: ignore[no-any-return]


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
