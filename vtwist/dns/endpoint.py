"""A client endpoint that resolves its host with a vtwist resolver, then connects by IP.

Every place that dials a name (freedom, the outbounds' servers over tcp/ws/kcp) goes
through this, so the one resolver of the config — the system's, or the ``dns`` section's —
answers for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from vtwist.dns.system import ANY

#: How many of a name's addresses are tried, in the resolver's order, before giving up.
MAX_ATTEMPTS = 4
#: With more addresses to try, one attempt gets this long before the next address has its
#: turn (a blackholed IPv6 route must not cost the whole connect timeout).
NEXT_ADDRESS_AFTER = 4.0


@implementer(IStreamClientEndpoint)
class ResolvingEndpoint:
    """Resolve ``host`` with ``resolver`` (``family`` 4/6 keeps one family), then connect
    with ``make(ip)``; an address that refuses or times out gives way to the next one (with
    ``clock``, after :data:`NEXT_ADDRESS_AFTER` seconds at most when more are left)."""

    def __init__(self, resolver: Any, host: str, make: Callable[[str], IStreamClientEndpoint],
                 family: int = ANY, clock: Any = None) -> None:
        self.resolver, self.host, self.make, self.family = resolver, host, make, family
        self.clock = clock

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        """Resolve, then connect to the first address that accepts."""
        async def go() -> Any:
            ips = await self.resolver.resolve(self.host, self.family)
            if not ips:
                raise DNSLookupError(self.host)
            last: Exception | None = None
            tried = ips[:MAX_ATTEMPTS]
            for i, ip in enumerate(tried):
                attempt = self.make(ip).connect(protocolFactory)
                if self.clock is not None and i < len(tried) - 1:
                    attempt.addTimeout(NEXT_ADDRESS_AFTER, self.clock)
                try:
                    return await attempt
                except (ConnectError, defer.TimeoutError) as e:  # refused, unreachable,
                    last = e                                     # timed out: the next one
            assert last is not None
            raise last
        return defer.Deferred.fromCoroutine(go())

    def __repr__(self) -> str:
        return f"<ResolvingEndpoint {self.host}>"
