"""The dispatcher: picks the outbound for a destination (routing), nothing more.

It answers synchronously when it can and with a Deferred when a rule needs the domain's
IPs first. Connecting, access lines and timers belong to the tunnel service.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IDispatcher, IOutbound
from vtwist.resolver import Resolver
from vtwist.routing import Route, RouteContext, Router, split_source

log = Logger(namespace="vtwist.dispatch")


class NoOutbound(Exception):
    """The configuration has no outbound for this traffic."""


@implementer(IDispatcher)
class Dispatcher:
    """Chooses an outbound for each destination.

    With a :class:`~vtwist.routing.Router`, its rules pick the outbound (first match wins);
    otherwise, or when no rule matches, the default (first) outbound takes the traffic.
    ``resolver`` looks up a domain's IPs when a rule needs them (``IPIfNonMatch`` /
    ``IPOnDemand``); without one, IP rules see IP-literal destinations only.
    """

    def __init__(self, outbounds: Sequence[IOutbound], default_tag: str | None = None,
                 router: Router | None = None, resolver: Resolver | None = None,
                 log_access: bool = True) -> None:
        self.outbounds = list(outbounds)
        self.by_tag = {o.tag: o for o in self.outbounds if o.tag}
        self.default = self.by_tag[default_tag] if default_tag else (
            self.outbounds[0] if self.outbounds else None)
        self.router = router if router is not None and router.rules else None
        if self.router is not None and self.router.balancers:
            self.router.outbound_tags = self.by_tag  # balancers see outbounds the API adds
        self.resolver = resolver
        self.log_access = log_access

    @staticmethod
    def context(destination: Destination, inbound_tag: str | None = None, source: str = "",
                email: str | None = None, protocol: str = "") -> RouteContext:
        """The routing context of one connection or UDP session."""
        source_ip, source_port = split_source(source)
        return RouteContext(destination.network, destination.host, destination.port,
                            inbound_tag or "", source_ip, source_port, email or "",
                            protocol=protocol)

    def outboundFor(self, destination: Destination, inbound_tag: str | None = None, *,
                    source: str = "", email: str | None = None) -> IOutbound:
        """The outbound for ``destination`` from ``inbound_tag`` (and ``source``, ``email``).

        Synchronous: rules that need a domain's IPs see none here; :meth:`choose` resolves.
        """
        if self.default is None:
            raise NoOutbound("no outbound configured")
        if self.router is None:
            return self.default
        ctx = self.context(destination, inbound_tag, source, email)
        return self._routed(self.router.decide(ctx), destination)

    def choose(self, destination: Destination, inbound_tag: str | None = None,
               source: str = "", email: str | None = None,
               protocol: str = "") -> IOutbound | Deferred[IOutbound]:
        """The outbound now, or a Deferred when the destination must be resolved first.

        ``protocol``: the sniffed protocol (the ``protocol`` rule field matches it). Raises
        :class:`NoOutbound` when the configuration has none.
        """
        if self.default is None:
            raise NoOutbound("no outbound configured")
        router = self.router
        if router is None:
            return self.default
        ctx = self.context(destination, inbound_tag, source, email, protocol)
        decision = router.route(ctx)
        if isinstance(decision, Route):
            return self._routed(decision, destination)
        if self.resolver is None:
            return self._routed(router.decide(ctx), destination)

        def resolved(ips: list[str]) -> IOutbound:
            log.debug("routing: {host} is {ips}", host=decision.domain, ips=", ".join(ips))
            again = router.route(ctx.with_resolved(ips))
            return self._routed(again if isinstance(again, Route) else Route(None), destination)

        return self.resolver(decision.domain).addCallback(resolved)

    def _routed(self, route: Route, destination: Destination) -> IOutbound:
        if route.rule is not None and self.router is not None:
            log.debug("routing: {dest} matches {rule} -> {tag}", dest=destination,
                      rule=self.router.rules[route.rule].path or f"rule {route.rule}",
                      tag=route.tag)
        return self._outbound(route.tag, destination)

    def _outbound(self, tag: str | None, destination: Destination) -> IOutbound:
        assert self.default is not None
        if tag is None:
            return self.default
        outbound = self.by_tag.get(tag)
        if outbound is None:  # the loader checks tags; only a hand-built Dispatcher gets here
            log.warn("routing: no outbound tagged {tag!r} for {dest}; using the default",
                     tag=tag, dest=destination)
            return self.default
        return outbound
