"""The network registry: one entry per network vtwist speaks (tcp, kcp, ws ...).

An entry (:class:`Network`, an :class:`~vtwist.interfaces.INetwork`) holds everything the
rest of vtwist needs to know about a network: its names, its ``*Settings`` key and parser,
its endpoints (the base endpoint under TLS and its :class:`~vtwist.interfaces.IStreamLayer`
above TLS), its default ALPN per side, what a share link's ``type``/``host``/``path`` mean
for it, and its endpoint-string prefixes. Code is named by ``"module:attribute"`` strings and
imported on first use, so reading the registry is cheap and imports no Twisted (the config
loader, the CLI and the twistd plugins do; the parsers named here live in Twisted-free
settings modules), and the network modules never have to import it back.

A new network is one module plus one :func:`register` call. Networks V2Ray knows but vtwist
does not implement are listed too (:data:`UNSUPPORTED`), so that a config naming one is told
so instead of being told the name is unknown.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zope.interface import implementer

from vtwist.interfaces import INetwork, IStreamLayer

#: A callable, or ``"package.module:attribute"`` naming one (imported on first use).
Ref = Callable[..., Any] | str

DEFAULT_ALPN = ("h2", "http/1.1")


def resolve(ref: Any) -> Any:
    """The object ``ref`` names (``"module:attribute"``), or ``ref`` itself (a module
    already imported is taken from ``sys.modules``: networks resolve their endpoint and
    layer for every connection, and ``import_module`` walks importlib's Python each time)."""
    if not isinstance(ref, str):
        return ref
    module, _, attribute = ref.partition(":")
    loaded = sys.modules.get(module)
    if loaded is None:
        loaded = importlib.import_module(module)
    return getattr(loaded, attribute)


@dataclass(frozen=True)
class EndpointString:
    """An endpoint-string prefix (``kcp:``, ``ws:``) and its parsers.

    ``server(reactor, *args, **kwargs)`` / ``client(reactor, *args, **kwargs)`` are what
    ``serverFromString`` / ``clientFromString`` call; None where the side has none.
    """

    prefix: str
    server: Ref | None = None
    client: Ref | None = None


@implementer(INetwork)
@dataclass(frozen=True, eq=False)
class Network:
    """One supported network. See :class:`vtwist.interfaces.INetwork`."""

    name: str
    aliases: tuple[str, ...] = ()
    settings_key: str | None = None
    #: ``(node, inbound) -> settings``.
    parser: Ref | None = None
    #: ``(reactor, listen, port, stream) -> IStreamServerEndpoint`` (under TLS).
    server_base: Ref | None = None
    #: ``(reactor, host, port, stream) -> IStreamClientEndpoint`` (under TLS).
    client_base: Ref | None = None
    #: ``(endpoint, stream) -> IStreamServerEndpoint``: a layer above TLS given as plain
    #: functions (a small network's alternative to ``layer``).
    server_layer: Ref | None = None
    #: ``(endpoint, host, port, stream) -> IStreamClientEndpoint``: the same, client side.
    client_layer: Ref | None = None
    server_alpn: tuple[str, ...] = DEFAULT_ALPN
    client_alpn: tuple[str, ...] = DEFAULT_ALPN
    #: A :class:`vtwist.transport.linkfields.LinkFields`; None: share links cannot name it.
    link: Ref | None = None
    endpoint_strings: tuple[EndpointString, ...] = ()
    #: Parse its settings whatever the network (vtwist always validates tcpSettings).
    always_parsed: bool = False
    #: Its :class:`~vtwist.interfaces.IStreamLayer` above TLS (ws, the HTTP disguise ...).
    layer: Ref | None = None
    #: TLS is part of the network itself (QUIC): its base endpoints read tlsSettings and
    #: the TLS layer leaves it alone.
    tls_inside: bool = False

    @property
    def endpoint_prefix(self) -> str | None:
        """The first endpoint-string prefix, or None."""
        return self.endpoint_strings[0].prefix if self.endpoint_strings else None

    @property
    def link_fields(self) -> Any:
        """The share-link fields (a LinkFields), or None."""
        return resolve(self.link) if self.link is not None else None

    def parse_settings(self, node: Any, inbound: bool) -> Any:
        """Validate its settings object into plain data (None without a parser)."""
        return resolve(self.parser)(node, inbound) if self.parser is not None else None

    def server_endpoint(self, reactor: Any, listen: str, port: int, stream: Any) -> Any:
        """The base endpoint listening on ``listen:port`` (TLS and layers go above)."""
        if self.server_base is None:
            raise ValueError(f"network {self.name!r} cannot listen")
        return resolve(self.server_base)(reactor, listen, port, stream)

    def client_endpoint(self, reactor: Any, host: str, port: int, stream: Any) -> Any:
        """The base endpoint reaching ``host:port`` (TLS and layers go above)."""
        if self.client_base is None:
            raise ValueError(f"network {self.name!r} cannot connect")
        return resolve(self.client_base)(reactor, host, port, stream)

    @property
    def stream_layer(self) -> IStreamLayer | None:
        """Its layer above TLS (an IStreamLayer), or None when it has none."""
        if self.layer is not None:
            return resolve(self.layer)  # type: ignore[no-any-return]
        if self.server_layer is None and self.client_layer is None:
            return None
        return FunctionLayer(self.name, self.server_layer, self.client_layer)

    def wrap_server(self, endpoint: Any, stream: Any) -> Any:
        """``endpoint`` with the network's layer above TLS (ws, the HTTP disguise ...)."""
        layer = self.stream_layer
        return endpoint if layer is None else layer.wrapServer(endpoint, stream)

    def wrap_client(self, endpoint: Any, host: str, port: int, stream: Any) -> Any:
        """``endpoint`` with the network's layer above TLS (ws, the HTTP disguise ...)."""
        layer = self.stream_layer
        return endpoint if layer is None else layer.wrapClient(endpoint, stream, host, port)


@implementer(IStreamLayer)
@dataclass(frozen=True)
class FunctionLayer:
    """An IStreamLayer made of a network's ``server_layer`` / ``client_layer`` functions;
    a side without one leaves the endpoint as it is."""

    name: str
    server: Ref | None = None
    client: Ref | None = None

    def wrapServer(self, endpoint: Any, settings: Any) -> Any:
        """``server(endpoint, settings)``."""
        return endpoint if self.server is None else resolve(self.server)(endpoint, settings)

    def wrapClient(self, endpoint: Any, settings: Any, host: str, port: int,
                   reactor: Any = None) -> Any:
        """``client(endpoint, host, port, settings)``."""
        if self.client is None:
            return endpoint
        return resolve(self.client)(endpoint, host, port, settings)


@dataclass(frozen=True)
class UnsupportedNetwork:
    """A network V2Ray has and vtwist does not: its names and settings key.

    ``in_links``: share links may name it (the link error lists it as known).
    """

    name: str
    aliases: tuple[str, ...] = ()
    settings_key: str | None = None
    in_links: bool = True


_TCP = "vtwist.transport.tcp"
_KCP = "vtwist.transport.kcp"
_WS = "vtwist.transport.ws"
_LINKS = "vtwist.transport.linkfields"

BUILTIN: tuple[Network, ...] = (
    Network(
        "tcp", (), "tcpSettings", f"{_TCP}.settings:parse_tcp_settings",
        f"{_TCP}.endpoints:server_base", f"{_TCP}.endpoints:client_base",
        # V2Ray's defaults: h2 on a tcp server, h2 and http/1.1 for its dialer.
        server_alpn=("h2",), client_alpn=DEFAULT_ALPN,
        link=f"{_LINKS}:TCP", always_parsed=True,
        layer=f"{_TCP}.disguise:HTTP_DISGUISE",
    ),
    Network(
        "kcp", ("mkcp",), "kcpSettings", f"{_KCP}.config:parse_settings",
        f"{_KCP}.network:server_base", f"{_KCP}.network:client_base",
        server_alpn=DEFAULT_ALPN, client_alpn=DEFAULT_ALPN,
        link=f"{_LINKS}:KCP",
        endpoint_strings=(EndpointString("kcp", f"{_KCP}.endpoints:server_from_string",
                                         f"{_KCP}.endpoints:client_from_string"),),
    ),
    Network(
        "ws", ("websocket",), "wsSettings", f"{_WS}.settings:parse_ws_settings",
        f"{_TCP}.endpoints:server_base", f"{_TCP}.endpoints:client_base",
        # A WebSocket server can only speak http/1.1 (V2Ray's offers h2 too, which a ws
        # client never takes); V2Ray's ws dialer offers http/1.1.
        server_alpn=("http/1.1",), client_alpn=("http/1.1",),
        link=f"{_LINKS}:WS",
        endpoint_strings=(
            EndpointString("ws", None, "vtwist.transport.endpoint_strings:ws_client"),
            EndpointString("wss", None, "vtwist.transport.endpoint_strings:wss_client"),
        ),
        layer=f"{_WS}.layer:WEBSOCKET",
    ),
    Network(
        "h2", ("http",), "httpSettings", "vtwist.transport.h2.settings:parse_http_settings",
        f"{_TCP}.endpoints:server_base", f"{_TCP}.endpoints:client_base",
        # HTTP/2 only (V2Ray's server offers h2, its client requires it); h2c without TLS.
        server_alpn=("h2",), client_alpn=("h2",),
        link="vtwist.transport.h2.links:HTTP",
        endpoint_strings=(EndpointString("h2", "vtwist.transport.h2.network:server_from_string",
                                         "vtwist.transport.h2.network:client_from_string"),),
        layer="vtwist.transport.h2.network:HTTP2",
    ),
    Network(
        "grpc", ("gun",), "grpcSettings", "vtwist.transport.grpc.settings:parse_grpc_settings",
        f"{_TCP}.endpoints:server_base", f"{_TCP}.endpoints:client_base",
        server_alpn=("h2",), client_alpn=("h2",),
        link="vtwist.transport.grpc.links:GRPC",
        endpoint_strings=(EndpointString(
            "grpc", "vtwist.transport.grpc.network:server_from_string",
            "vtwist.transport.grpc.network:client_from_string"),),
        layer="vtwist.transport.grpc.network:GUN",
    ),
    Network(
        "quic", (), "quicSettings", "vtwist.transport.quic.settings:parse_quic_settings",
        "vtwist.transport.quic.network:server_base", "vtwist.transport.quic.network:client_base",
        link=f"{_LINKS}:QUIC", tls_inside=True,
        endpoint_strings=(EndpointString("quic", "vtwist.transport.quic.network:server_from_string",
                                         "vtwist.transport.quic.network:client_from_string"),),
    ),
    Network(
        "domainsocket", ("ds",), "dsSettings",
        "vtwist.transport.domainsocket.settings:parse_ds_settings",
        "vtwist.transport.domainsocket.endpoints:server_base",
        "vtwist.transport.domainsocket.endpoints:client_base",
        server_alpn=("h2",), client_alpn=DEFAULT_ALPN,
        endpoint_strings=(EndpointString(
            "ds", "vtwist.transport.domainsocket.endpoints:server_from_string",
            "vtwist.transport.domainsocket.endpoints:client_from_string"),),
    ),
)

UNSUPPORTED: tuple[UnsupportedNetwork, ...] = (
)

_networks: dict[str, Network] = {}


def register(network: Network) -> None:
    """Add ``network``; its name and aliases must be new."""
    taken = set(all_names()) | {n for u in UNSUPPORTED for n in (u.name, *u.aliases)}
    clash = [n for n in (network.name, *network.aliases) if n in taken]
    if clash:
        raise ValueError(f"network name already registered: {', '.join(clash)}")
    _networks[network.name] = network


def unregister(name: str) -> None:
    """Remove the network named ``name`` (its canonical name)."""
    del _networks[name]


def networks() -> tuple[Network, ...]:
    """Every supported network, in registration order."""
    return tuple(_networks.values())


def lookup(name: str) -> Network | None:
    """The supported network called ``name`` (or one of its aliases), or None."""
    name = name.lower()
    for network in _networks.values():
        if name == network.name or name in network.aliases:
            return network
    return None


def require(name: str) -> Network:
    """The supported network called ``name``; ValueError naming the registered ones if none."""
    network = lookup(name)
    if network is None:
        raise ValueError(f"network {name!r} is not registered "
                         f"(vtwist has: {', '.join(names())})")
    return network


def unsupported(name: str) -> UnsupportedNetwork | None:
    """The known but unsupported network called ``name`` (or an alias), or None."""
    name = name.lower()
    for network in UNSUPPORTED:
        if name == network.name or name in network.aliases:
            return network
    return None


def names() -> tuple[str, ...]:
    """The supported networks' canonical names."""
    return tuple(_networks)


def all_names() -> tuple[str, ...]:
    """The supported networks' names and aliases."""
    return tuple(n for network in _networks.values() for n in (network.name, *network.aliases))


def link_names() -> tuple[str, ...]:
    """The supported networks a share link can name."""
    return tuple(n.name for n in _networks.values() if n.link is not None)


def unsupported_link_names() -> tuple[str, ...]:
    """The unsupported networks a share link may name (to be told they are unsupported)."""
    return tuple(n.name for n in UNSUPPORTED if n.in_links)


def settings_keys() -> tuple[str, ...]:
    """Every network settings key (``tcpSettings`` ...), supported or not."""
    keys = [n.settings_key for n in _networks.values()] + [n.settings_key for n in UNSUPPORTED]
    return tuple(k for k in keys if k)


def unsupported_settings_keys() -> tuple[str, ...]:
    """The settings keys of networks vtwist does not implement (accepted, ignored)."""
    return tuple(n.settings_key for n in UNSUPPORTED if n.settings_key)


def endpoint_string(prefix: str) -> EndpointString | None:
    """The endpoint-string parsers for ``prefix`` (``kcp``, ``ws``, ``wss`` ...), or None."""
    for network in _networks.values():
        for entry in network.endpoint_strings:
            if entry.prefix == prefix:
                return entry
    return None


def endpoint_prefixes() -> tuple[str, ...]:
    """Every registered endpoint-string prefix."""
    return tuple(e.prefix for n in _networks.values() for e in n.endpoint_strings)


for _builtin in BUILTIN:
    register(_builtin)
del _builtin
