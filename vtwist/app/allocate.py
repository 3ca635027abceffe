"""An inbound's ``allocate``: which of its ports listen, and which port a detour offers.

``"always"`` (:class:`StaticPorts`): every port of the range listens (the ordinary
``InboundService`` per port); a detour to it offers one of them at random, valid 255 minutes.

``"random"`` (:class:`RandomPortsService`, V2Ray 4.34's ``DynamicInboundHandler``): every
``refresh`` minutes, ``concurrency`` ports picked at random from the range (never one still
open) start listening, each with a fresh factory (a fresh VMess user table: the accounts a
detour makes up live on one port only); each generation closes ``2 * refresh`` minutes after
it opened, so the previous one keeps serving the clients it was offered to. A detour offers
a random port of the newest generation, valid for the minutes left until the next refresh.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.config.model import InboundConfig

log = Logger(namespace="vtwist.allocate")

#: What an ``always`` inbound offers a detour (4.34: 9999, capped to a byte by the command).
ALWAYS_MINUTES = 9999


@dataclass
class Worker:
    """One listening port of a generation: its factory and (once bound) listening port."""

    port: int
    factory: Any
    listener: Any = None


class StaticPorts:
    """``allocate.strategy`` ``"always"``: the inbound's factory on every one of its ports."""

    def __init__(self, factory: Any, ports: list[int], rng: random.Random | None = None) -> None:
        self.factory = factory
        self.ports = ports
        self.rng = rng or random.Random()

    def pick(self) -> tuple[Any, int, int] | None:
        """(factory, port, minutes valid) for a detour."""
        if not self.ports:
            return None
        return self.factory, self.rng.choice(self.ports), ALWAYS_MINUTES


class RandomPortsService(Service):
    """``allocate.strategy`` ``"random"``: ``concurrency`` random ports of the range at a
    time, re-picked every ``refresh`` minutes.

    ``build_factory()`` makes a fresh factory per port and generation; ``endpoint(port)``
    the server endpoint for a port. ``listening`` fires once the first generation is bound
    (``failure`` is set when none of its ports could listen).
    """

    def __init__(self, inbound: InboundConfig, reactor: Any, build_factory: Callable[[], Any],
                 endpoint: Callable[[int], Any], description: str,
                 rng: random.Random | None = None) -> None:
        self.inbound = inbound
        self.reactor = reactor
        self.build_factory = build_factory
        self.endpoint = endpoint
        self.description = description
        self.rng = rng or random.Random()
        self.refresh_seconds = inbound.allocate.refresh * 60
        self.concurrency = inbound.allocate.concurrency
        self.in_use: set[int] = set()
        self.current: list[Worker] = []
        self.generations: list[list[Worker]] = []
        self.last_refresh = 0.0
        self.failure: Any = None
        self.listening: Deferred[Any] | None = None
        self._loop: LoopingCall | None = None
        self._closers: list[Any] = []

    # -- the service ---------------------------------------------------------------------
    def startService(self) -> None:
        """Open the first generation now, then a new one every ``refresh`` minutes."""
        super().startService()
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.reactor
        self._loop.start(self.refresh_seconds, now=True)

    def stopService(self) -> Deferred[Any]:
        """Stop refreshing; close every open port and its connections."""
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in self._closers:
            if call.active():
                call.cancel()
        self._closers = []
        closing = [self._close(workers) for workers in list(self.generations)]
        self.generations = []
        self.current = []
        return DeferredList(closing)

    # -- generations ---------------------------------------------------------------------
    def _free_port(self) -> int | None:
        free = [p for p in self.inbound.ports if p not in self.in_use]
        return self.rng.choice(free) if free else None

    def refresh(self) -> None:
        """Open a new generation of ``concurrency`` random ports; close it ``2 * refresh``
        minutes from now."""
        first = self.listening is None
        if first:
            self.listening = Deferred()
        self.last_refresh = self.reactor.seconds()
        workers: list[Worker] = []
        binds = []
        for _ in range(self.concurrency):
            port = self._free_port()
            if port is None:
                log.warn("{what}: no free port left in the range for a new listener",
                         what=self.description)
                break
            self.in_use.add(port)
            worker = Worker(port, self.build_factory())
            workers.append(worker)
            binds.append(self._listen(worker))
        self.generations.append(workers)
        self._closers.append(self.reactor.callLater(2 * self.refresh_seconds,
                                                    self._expire, workers))
        done = DeferredList(binds, consumeErrors=True)

        def bound(_: Any) -> None:
            if self.running:
                self.current = [w for w in workers if w.listener is not None]
                log.info("{what}: listening on ports {ports} for {mins} minutes",
                         what=self.description, ports=sorted(w.port for w in self.current),
                         mins=self.inbound.allocate.refresh * 2)
            if first:
                if not self.current:
                    self.failure = Failure(CannotListenError(
                        self.inbound.listen, 0, f"no port of {self.description} could listen"))
                self.listening.callback(None)  # type: ignore[union-attr]

        done.addCallback(bound)

    def _listen(self, worker: Worker, tried: set[int] | None = None) -> Deferred[Any]:
        """Bind ``worker``; a port that is taken (by another program) is left for another
        free port of the range, until the range has none left."""
        tried = tried if tried is not None else set()
        tried.add(worker.port)

        def listened(listener: Any) -> None:
            worker.listener = listener

        def failed(failure: Any) -> Deferred[Any] | None:
            self.in_use.discard(worker.port)
            log.warn("{what}: cannot listen on port {port}: {why}", what=self.description,
                     port=worker.port, why=failure.getErrorMessage())
            untried = [p for p in self.inbound.ports if p not in self.in_use and p not in tried]
            if not untried or not self.running:
                return None
            worker.port = self.rng.choice(untried)
            self.in_use.add(worker.port)
            return self._listen(worker, tried)

        return maybeDeferred(self.endpoint(worker.port).listen, worker.factory).addCallbacks(
            listened, failed)

    def _expire(self, workers: list[Worker]) -> Deferred[Any]:
        if workers in self.generations:
            self.generations.remove(workers)
        if self.current is workers:
            self.current = []
        return self._close(workers)

    def _close(self, workers: list[Worker]) -> Deferred[Any]:
        closing = []
        for worker in workers:
            self.in_use.discard(worker.port)
            worker.factory.closeAll()
            if worker.listener is not None:
                listener, worker.listener = worker.listener, None
                closing.append(maybeDeferred(listener.stopListening))
        return DeferredList(closing)

    # -- detours -------------------------------------------------------------------------
    def pick(self) -> tuple[Any, int, int] | None:
        """(factory, port, minutes valid) of a random port of the newest generation (4.34's
        ``GetRandomInboundProxy``), or None when none listens."""
        if not self.current:
            return None
        worker = self.rng.choice(self.current)
        elapsed = int((self.reactor.seconds() - self.last_refresh) // 60)
        return worker.factory, worker.port, max(self.inbound.allocate.refresh - elapsed, 0)


def random_ports(inbound: InboundConfig, ctx: Any,
                 build_factory: Callable[[], Any]) -> RandomPortsService:
    """The :class:`RandomPortsService` of an inbound (registered under its tag in
    ``ctx.inbounds`` for detours); its ports listen over the inbound's streamSettings."""
    from vtwist.transport.stack import server_endpoint

    what = f"{inbound.protocol} inbound {inbound.tag!r}" if inbound.tag else \
        f"{inbound.protocol} inbound"
    service = RandomPortsService(
        inbound, ctx.reactor, build_factory,
        lambda port: server_endpoint(ctx.reactor, inbound.listen, port, inbound.stream), what)
    if inbound.tag:
        ctx.inbounds[inbound.tag] = service
    return service
