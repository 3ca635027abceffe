"""The dispatcher: picks the outbound for a destination and connects to it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.relay import RelayProtocol, RelayProtocolFactory
from vtwist.resolver import Resolver
from vtwist.routing import Route, RouteContext, Router, split_source

access_log = Logger(namespace="vtwist.access")
log = Logger(namespace="vtwist.dispatch")


class NoOutbound(Exception):
    """The configuration has no outbound for this traffic."""


class Dispatcher:
    """Chooses an outbound for each destination and connects.

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
        self.resolver = resolver
        self.log_access = log_access

    @staticmethod
    def context(destination: Destination, inbound_tag: str | None = None, source: str = "",
                email: str | None = None) -> RouteContext:
        """The routing context of one connection or UDP session."""
        source_ip, source_port = split_source(source)
        return RouteContext(destination.network, destination.host, destination.port,
                            inbound_tag or "", source_ip, source_port, email or "")

    def outboundFor(self, destination: Destination, inbound_tag: str | None = None, *,
                    source: str = "", email: str | None = None) -> IOutbound:
        """The outbound for ``destination`` from ``inbound_tag`` (and ``source``, ``email``).

        Synchronous: rules that need a domain's IPs see none here; :meth:`connect` and
        :meth:`packetSession` resolve.
        """
        if self.default is None:
            raise NoOutbound("no outbound configured")
        if self.router is None:
            return self.default
        ctx = self.context(destination, inbound_tag, source, email)
        return self._routed(self.router.decide(ctx), destination)

    def _choose(self, destination: Destination, inbound_tag: str | None, source: str,
                email: str | None) -> IOutbound | Deferred[IOutbound]:
        """The outbound now, or a Deferred when the destination must be resolved first."""
        if self.default is None:
            raise NoOutbound("no outbound configured")
        router = self.router
        if router is None:
            return self.default
        ctx = self.context(destination, inbound_tag, source, email)
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

    def connect(self, destination: Destination, *, inbound_tag: str | None = None,
                source: str = "", email: str | None = None) -> Deferred[RelayProtocol]:
        """Connect to ``destination``; fires with a paused, unattached :class:`RelayProtocol`.

        Logs a V2Ray-style access line naming the chosen outbound.
        """
        try:
            chosen = self._choose(destination, inbound_tag, source, email)
        except NoOutbound as e:
            return fail(e)

        def connectThrough(outbound: IOutbound) -> Deferred[RelayProtocol]:
            self.logAccess(source, destination, inbound_tag, outbound, email)
            return outbound.endpointFor(destination).connect(RelayProtocolFactory())

        if isinstance(chosen, Deferred):
            return chosen.addCallback(connectThrough)
        try:
            return connectThrough(chosen)
        except Exception as e:  # noqa: BLE001 - becomes the caller's errback
            return fail(e)

    def packetSession(self, destination: Destination, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None], *, inbound_tag: str | None = None,
                      source: str = "", email: str | None = None) -> IPacketSession:
        """Open a UDP session for traffic whose first packet goes to ``destination``.

        When routing must resolve first, the session queues a few packets meanwhile.
        """
        chosen = self._choose(destination, inbound_tag, source, email)
        if not isinstance(chosen, Deferred):
            self.logAccess(source, destination, inbound_tag, chosen, email)
            return chosen.packetSession(onPacket, onClose)
        pending = PendingPacketSession(onPacket, onClose)

        def opened(outbound: IOutbound) -> None:
            if not pending.closed:
                self.logAccess(source, destination, inbound_tag, outbound, email)
            pending.open(outbound)

        def failed(failure: Failure) -> None:
            if not pending.closed:
                log.info("UDP to {dest}: {why}", dest=destination, why=failure.getErrorMessage())
            pending.fail()

        pending.deciding = chosen.addCallbacks(opened, failed)
        return pending

    def logAccess(self, source: str, destination: Destination, inbound_tag: str | None,
                  outbound: IOutbound, email: str | None = None) -> None:
        """``from 127.0.0.1:50000 accepted tcp:example.com:443 [socks-in >> direct]``."""
        if not self.log_access:
            return
        line = f"from {source} accepted {destination} [{inbound_tag or ''} >> {outbound.tag or ''}]"
        if email:
            line += f" email: {email}"
        access_log.info("{line}", line=line)


@implementer(IPacketSession)
class PendingPacketSession:
    """A UDP session whose outbound is still being chosen: packets wait (a few) meanwhile."""

    MAX_QUEUED = 64

    def __init__(self, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None]) -> None:
        self.onPacket = onPacket
        self.onClose = onClose
        self.queue: list[tuple[bytes, Destination]] = []
        self.session: IPacketSession | None = None
        self.deciding: Deferred[Any] | None = None
        self.closed = False

    def send(self, data: bytes, destination: Destination) -> None:
        """Send now, or queue until the outbound is known (beyond MAX_QUEUED: dropped)."""
        if self.closed:
            return
        if self.session is not None:
            self.session.send(data, destination)
        elif len(self.queue) < self.MAX_QUEUED:
            self.queue.append((data, destination))

    def open(self, outbound: IOutbound) -> None:
        """The outbound is known: open its session and send what waited."""
        self.deciding = None
        if self.closed:
            return
        self.session = outbound.packetSession(self.onPacket, self.onClose)
        queue, self.queue = self.queue, []
        for data, destination in queue:
            if self.closed:
                break
            self.session.send(data, destination)

    def fail(self) -> None:
        """No outbound: the session ends on its own."""
        self.deciding = None
        if not self.closed:
            self.closed = True
            self.queue = []
            self.onClose()

    def close(self) -> None:
        """End the session, whether or not its outbound is known yet."""
        if self.closed:
            return
        self.closed = True
        self.queue = []
        if self.session is not None:
            self.session.close()
        elif self.deciding is not None:
            self.deciding.cancel()
