"""Name resolution for routing: the system resolver (getaddrinfo) in the reactor's threadpool.

A resolver is any ``Callable[[str], Deferred[list[str]]]``: the domain's IP addresses as
strings. The dispatcher takes one; tests inject their own.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

Resolver = Callable[[str], "Deferred[list[str]]"]


def lookup(host: str, family: int = socket.AF_UNSPEC) -> list[str]:
    """``host``'s addresses of ``family`` (getaddrinfo order, no duplicates, no IPv6 scope).

    Blocking: call it in a thread. Raises ``OSError`` or ``UnicodeError`` (a bad name).
    """
    infos = socket.getaddrinfo(host, 0, family, socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]).split("%", 1)[0], None)
    return list(seen)


def _nothing(failure: Failure) -> list[str]:
    failure.trap(OSError, UnicodeError)
    return []


def system_resolver(reactor: Any) -> Resolver:
    """A resolver using ``getaddrinfo`` off the reactor thread; failures give an empty list."""

    def resolve(host: str) -> Deferred[list[str]]:
        d = threads.deferToThreadPool(reactor, reactor.getThreadPool(), lookup, host)
        d.addErrback(_nothing)
        return d

    return resolve
