"""A worker's stop on SIGTERM: stop accepting, let the live connections finish, then stop.

:func:`drain` stops every stream listener (TCP and UNIX ports) of a
:class:`~vtwist.service.VTwistService`, so new connections go to the other workers (or, when
the supervisor stops them all, are refused), and waits until the inbounds' live connections
have ended, at most ``timeout`` seconds. The reactor's stop then closes whatever is left, as
before. Listeners over UDP (mKCP, QUIC, dokodemo-door and Shadowsocks UDP) keep running
while it waits: their socket carries the live sessions too.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet import defer, tcp
from twisted.logger import Logger

log = Logger(namespace="vtwist.workers")

#: how long a worker lets its connections finish after SIGTERM (the supervisor kills a
#: worker that is still there after its :data:`~vtwist.app.workers.STOP_TIMEOUT`)
DRAIN_TIMEOUT = 8.0
#: how often it looks whether they have
CHECK_INTERVAL = 0.1


def stop_accepting(service: Any) -> list[defer.Deferred[Any]]:
    """Stop every stream listener of ``service`` (its connections stay)."""
    stopping = []
    for inbound in getattr(service, "inbound_services", ()):
        port = getattr(inbound, "port", None)
        if isinstance(port, tcp.Port):  # (UNIX ports too)
            inbound.port = None
            stopping.append(defer.maybeDeferred(port.stopListening))
    return stopping


def live_connections(service: Any) -> int:
    """How many connections the inbounds of ``service`` still have (a reload's drained
    inbounds included)."""
    factories = {id(f): f for f in (getattr(s, "factory", None)
                                    for s in getattr(service, "inbound_services", ()))
                 if f is not None}
    try:
        drains = service.getServiceNamed("vtwist-drains")
    except (AttributeError, KeyError):
        drains = None
    for factory in getattr(drains, "factories", ()):
        factories[id(factory)] = factory

    def count() -> int:
        return sum(_open(protocol) for factory in factories.values()
                   for protocol in list(getattr(factory, "connections", ())))

    found = count()
    if found:  # an ended connection's protocol and transport refer to each other
        gc.collect()
        found = count()
    return found


def _open(protocol: Any) -> bool:
    """``protocol``'s connection has not ended (as far as its transport tells)."""
    transport = getattr(protocol, "transport", None)
    if transport is None:
        return False
    return not getattr(transport, "disconnected", False)


def drain(service: Any, clock: Any, timeout: float = DRAIN_TIMEOUT) -> defer.Deferred[int]:
    """Stop accepting and wait until ``service``'s connections have ended or ``timeout``
    passed; fires with the number still open then."""
    stopping = stop_accepting(service)
    done: defer.Deferred[int] = defer.Deferred()
    deadline = clock.seconds() + timeout
    live = live_connections(service)
    if live:
        log.info("draining {count} connection(s) for up to {timeout:.0f} s", count=live,
                 timeout=timeout)

    def look() -> None:
        left = live_connections(service)
        if not left:
            done.callback(0)
        elif clock.seconds() >= deadline:
            log.info("{count} connection(s) still open after {timeout:.0f} s: closing them",
                     count=left, timeout=timeout)
            done.callback(left)
        else:
            clock.callLater(CHECK_INTERVAL, look)

    def listeners_stopped(_: Any) -> None:
        look()

    defer.DeferredList(stopping, consumeErrors=True).addCallback(listeners_stopped)
    return done
