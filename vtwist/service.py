"""Config -> a running ``MultiService``: outbounds, the dispatcher and tunnel service, one
service per inbound port."""

from __future__ import annotations

from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.app.allocate import StaticPorts, random_ports
from vtwist.app.api.setup import Operations, build_stats
from vtwist.app.reverse import reverse_bridges, reverse_portals
from vtwist.app.switch import SwitchEndpoint
from vtwist.config.model import Config, InboundConfig
from vtwist.config.registry import inbound_spec
from vtwist.dns.system import routing_lookup
from vtwist.reactors import resolve_reactor
from vtwist.transport.stack import server_endpoint
from vtwist.tunnel.dialer import build_outbounds
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.dnsroute import config_resolver
from vtwist.tunnel.inbound import BuildContext
from vtwist.tunnel.service import TunnelService

log = Logger(namespace="vtwist.service")


class InboundService(Service):
    """Listens for one inbound on one port; stopping closes the port and the inbound's
    connections (its factory, an :class:`~vtwist.tunnel.inbound.InboundFactory`, tracks them)."""

    def __init__(self, endpoint: Any, factory: Any, description: str) -> None:
        self.failure: Any = None
        self.endpoint = endpoint
        self.factory = factory
        self.description = description
        self.port: Any = None
        self.listening: Deferred[Any] | None = None

    def startService(self) -> None:
        """Start listening; a failure to bind is logged and kept in ``failure``."""
        super().startService()
        self.listening = self.endpoint.listen(self.factory)

        def listened(port: Any) -> Any:
            self.port = port
            log.info("listening: {what}", what=self.description, vtwist_always=True)
            return port

        def failed(failure: Any) -> None:
            self.failure = failure
            log.error("{what}: cannot listen: {why}", what=self.description,
                      why=failure.getErrorMessage())

        self.listening.addCallbacks(listened, failed)

    def stopService(self) -> Deferred[Any] | None:
        """Stop listening and close every connection this inbound accepted."""
        super().stopService()
        self.factory.closeAll()
        if self.port is not None:
            port, self.port = self.port, None
            return maybeDeferred(port.stopListening)
        return None


class DatagramService(InboundService):
    """The UDP listener an inbound owns on one of its ports (dokodemo-door): started with
    ``factory.listenDatagrams(reactor, listen, port)``; stopping the port closes its flows."""

    def __init__(self, factory: Any, reactor: Any, listen: str, port: int,
                 description: str) -> None:
        super().__init__(None, factory, description)
        self.reactor = reactor
        self.address = (listen, port)

    def startService(self) -> None:
        """Start listening; a failure to bind is logged and kept in ``failure``."""
        Service.startService(self)
        try:
            self.port = self.factory.listenDatagrams(self.reactor, *self.address)
        except Exception:  # noqa: BLE001 - CannotListenError, OSError (no CAP_NET_ADMIN)
            self.failure = Failure()
            log.error("{what}: cannot listen: {why}", what=self.description,
                      why=self.failure.getErrorMessage())
            self.listening = fail(self.failure)
            self.listening.addErrback(lambda _: None)
            return
        log.info("listening: {what}", what=self.description, vtwist_always=True)
        self.listening = succeed(self.port)

    def stopService(self) -> Deferred[Any] | None:
        """Stop listening (the protocol closes its flows)."""
        Service.stopService(self)
        if self.port is not None:
            port, self.port = self.port, None
            return maybeDeferred(port.stopListening)
        return None


class VTwistService(MultiService):
    """Everything one config describes. ``dispatcher`` is reachable for embedding."""

    def __init__(self, config: Config, reactor: Any) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        #: the one resolver (vtwist.dns): the dns section's, or the system's
        self.resolver = config_resolver(config.dns, reactor, lambda: self.dispatcher)
        ctx = BuildContext(reactor=reactor, policy=config.policy, resolver=self.resolver)
        outbounds = build_outbounds(config.outbounds, ctx)  # proxySettings: chains first
        outbounds += reverse_portals(config.reverse, ctx)
        self.dispatcher = Dispatcher(outbounds, router=config.routing,
                                     resolver=routing_lookup(self.resolver),
                                     log_access=config.log.access != "none")
        self.tunnels = ctx.tunnels = TunnelService(self.dispatcher, reactor,
                                                   stats=build_stats(config))
        #: stats, the gRPC API and metrics (vtwist.app.api.setup)
        self.operations = ctx.operations = Operations(config, self, ctx)
        self.ctx = ctx
        self.inbound_services: list[InboundService] = []
        #: each inbound's services, in config order (hot reload replaces them one by one)
        self.inbound_groups: list[list[InboundService]] = []
        for inbound in config.inbounds:
            group = inbound_services(inbound, ctx)
            self.inbound_groups.append(group)
            for service in group:
                service.setServiceParent(self)
                self.inbound_services.append(service)
        for service in self.operations.extra_services():  # the metrics endpoint
            service.setServiceParent(self)
        for bridge in reverse_bridges(config.reverse, self.tunnels):
            bridge.setServiceParent(self)

    def stopService(self) -> Deferred[Any] | None:
        """Stop the inbounds, then close what outbounds keep open (mux carriers)."""
        stopped = super().stopService()
        closing = [d for d in (getattr(o, "close", lambda: None)()
                               for o in [*self.dispatcher.outbounds, self.resolver])
                   if d is not None]
        if not closing:
            return stopped
        if stopped is not None:
            closing.append(stopped)
        return DeferredList(closing, consumeErrors=True)

    @property
    def failed(self) -> bool:
        """True when an inbound could not listen."""
        return any(s.failure is not None for s in self.inbound_services)

    def whenListening(self) -> Deferred[Any]:
        """Fires when every inbound port is listening (after ``startService``); fails with
        the first inbound's bind error otherwise."""
        def check(result: Any) -> Any:
            for service in self.inbound_services:
                if service.failure is not None:
                    return service.failure
            return result

        return DeferredList([s.listening for s in self.inbound_services if s.listening],
                            consumeErrors=True).addCallback(check)

    def stopReactorIfUnbound(self) -> None:
        """For a process that runs only this service: once the reactor runs, stop it if an
        inbound could not listen (the bind error is logged; :attr:`failed` says so)."""
        def check() -> None:
            def stop(_: Any) -> None:
                if self.reactor.running:
                    self.reactor.stop()

            self.whenListening().addErrback(stop)

        self.reactor.callWhenRunning(check)


def build_inbound_factory(inbound: InboundConfig, ctx: BuildContext) -> Any:
    """The factory (protocol server) of one inbound, its sniffing set."""
    api = ctx.operations.api_factory(inbound) if ctx.operations is not None else None
    if api is not None:  # routing sends this inbound to the gRPC API
        return api
    factory = inbound_spec(inbound.protocol).build_factory(inbound, ctx)  # type: ignore[union-attr]
    if getattr(factory, "handshakes", None) is not None:  # vtwist's policy.system.maxHandshakes
        factory.handshakes.limit = ctx.policy.system.max_handshakes
    if inbound.sniffing.enabled:
        factory.sniffing = tuple(inbound.sniffing.dest_override)
    return factory


def inbound_services(inbound: InboundConfig, ctx: BuildContext) -> list[InboundService]:
    """One :class:`InboundService` per port of an inbound; the ports share one factory.

    A factory may own its listeners: ``streamEndpoint(reactor, listen, port, stream)`` gives
    its stream endpoint (None: no stream listener), and with ``listensDatagrams`` true,
    ``listenDatagrams(reactor, listen, port)`` a UDP port beside it (a
    :class:`DatagramService`). ``allocate.strategy`` random: one
    :class:`~vtwist.app.allocate.RandomPortsService` instead, a factory per open port.
    """
    def build() -> Any:
        return build_inbound_factory(inbound, ctx)

    if inbound.allocate.strategy == "random":
        return [random_ports(inbound, ctx, build)]
    factory = build()
    if inbound.tag:
        ctx.inbounds[inbound.tag] = StaticPorts(factory, inbound.ports)
    stream_endpoint = getattr(factory, "streamEndpoint", server_endpoint)
    services: list[InboundService] = []
    for port in inbound.ports:
        what = inbound_description(inbound, factory, port)
        endpoint = stream_endpoint(ctx.reactor, inbound.listen, port, inbound.stream)
        if endpoint is not None:  # switchable: a reload may replace the factory in place
            services.append(InboundService(SwitchEndpoint(endpoint), factory, what))
        if getattr(factory, "listensDatagrams", False) and inbound.listen.startswith(("/", "@")):
            log.warn("{what}: no UDP on a UNIX socket, the stream listens alone (V2Ray "
                     "4.34 listens on one only for vmess, vless, trojan and http)",
                     what=inbound_description(inbound, factory, port, "udp"))
        elif getattr(factory, "listensDatagrams", False):
            services.append(DatagramService(factory, ctx.reactor, inbound.listen, port,
                                            inbound_description(inbound, factory, port, "udp")))
    return services


def inbound_description(inbound: InboundConfig, factory: Any, port: int,
                        network: str = "") -> str:
    """``socks 127.0.0.1:1080/tcp (+udp) [socks-in]``: what the listener of ``inbound`` on
    ``port`` serves (``network`` overrides the stream's), as the listening line says it."""
    stream = inbound.stream
    if not network:
        network = getattr(stream, "network", "tcp") or "tcp"
        if getattr(stream, "security", "none") == "tls":
            network += "+tls"
    udp = " (+udp)" if getattr(factory, "udp", False) is True else ""
    tag = f" [{inbound.tag}]" if inbound.tag else ""
    host = inbound.listen if ":" not in inbound.listen else f"[{inbound.listen}]"
    if inbound.listen.startswith(("/", "@")):  # a UNIX socket: no port
        return f"{inbound.protocol} {host}/{network}{udp}{tag}"
    return f"{inbound.protocol} {host}:{port}/{network}{udp}{tag}"


def build_service(config: Config, reactor: Any = None) -> VTwistService:
    """The whole service tree for ``config``."""
    return VTwistService(config, resolve_reactor(reactor))
