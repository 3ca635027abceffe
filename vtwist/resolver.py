"""Name resolution for routing (kept for its importers): the resolvers themselves live in
:mod:`vtwist.dns` — :class:`vtwist.dns.system.SystemResolver` by default, a
:class:`vtwist.dns.resolver.DnsResolver` when the config has a ``dns`` section.

A routing resolver is any ``Callable[[str], Deferred[list[str]]]``: the domain's IP
addresses as strings, empty when it has none. The dispatcher takes one; tests inject their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

from vtwist.dns.system import SystemResolver, lookup, routing_lookup

Resolver = Callable[[str], "Deferred[list[str]]"]

__all__ = ["Resolver", "lookup", "system_resolver"]


def system_resolver(reactor: Any) -> Resolver:
    """A routing resolver using ``getaddrinfo`` off the reactor thread; failures give an
    empty list."""
    return routing_lookup(SystemResolver(reactor))
