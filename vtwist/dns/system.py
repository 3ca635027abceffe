"""The system resolver (``getaddrinfo`` in the reactor's threadpool) behind the one resolver
interface every part of vtwist uses.

A resolver has ``resolve(host, family=ANY) -> Deferred[list[str]]``: the IP addresses of
``host`` as strings (``family`` 4 or 6 keeps one family), failing with
``twisted.internet.error.DNSLookupError`` when there are none. :class:`SystemResolver` is the
default; :class:`vtwist.dns.resolver.DnsResolver` is the one a ``dns`` section builds.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import threads
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import DNSLookupError
from twisted.python.failure import Failure

from vtwist.address import parse_ip

#: ``family`` values: any, IPv4 only, IPv6 only.
ANY, V4, V6 = 0, 4, 6
_AF = {ANY: socket.AF_UNSPEC, V4: socket.AF_INET, V6: socket.AF_INET6}


class NoSuchDomain(DNSLookupError):
    """The name does not exist (NXDOMAIN)."""


class NoAddress(DNSLookupError):
    """The name exists but has no address of the family asked for."""


class Resolver(Protocol):
    """Anything that resolves names for vtwist."""

    def resolve(self, host: str, family: int = ANY) -> Deferred[list[str]]:
        """``host``'s addresses (of ``family``); fails with DNSLookupError."""
        ...


def lookup(host: str, family: int = socket.AF_UNSPEC) -> list[str]:
    """``host``'s addresses of socket ``family`` (getaddrinfo order, no duplicates, no IPv6
    scope). Blocking: call it in a thread. Raises ``OSError`` or ``UnicodeError``."""
    infos = socket.getaddrinfo(host, 0, family, socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]).split("%", 1)[0], None)
    return list(seen)


def literal(host: str, family: int) -> Deferred[list[str]] | None:
    """The answer for an IP literal (None when ``host`` is a name)."""
    ip = parse_ip(host)
    if ip is None:
        return None
    if family not in (ANY, ip.version):
        return fail(DNSLookupError(f"{host}: not an IPv{family} address"))
    return succeed([str(ip)])


class SystemResolver:
    """The operating system's resolver, off the reactor thread."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def resolve(self, host: str, family: int = ANY) -> Deferred[list[str]]:
        """``getaddrinfo`` in the reactor's threadpool."""
        host = host.strip("[]")
        known = literal(host, family)
        if known is not None:
            return known

        def check(ips: list[str]) -> list[str]:
            if not ips:
                raise DNSLookupError(f"{host}: no address")
            return ips

        def failed(failure: Failure) -> Failure:
            failure.trap(OSError, UnicodeError)  # UnicodeError: a label IDNA refuses
            error = failure.value
            if isinstance(error, socket.gaierror) and error.errno == socket.EAI_NONAME:
                raise NoSuchDomain(f"{host}: {failure.getErrorMessage()}")
            raise DNSLookupError(f"{host}: {failure.getErrorMessage()}")

        d = threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), lookup,
                                      host, _AF[family])
        return d.addCallbacks(check, failed)


def routing_lookup(resolver: Resolver) -> Callable[[str], Deferred[list[str]]]:
    """What routing wants: a domain's IPs, an empty list when it has none (as V2Ray then
    lets IP conditions fail)."""
    def resolve(host: str) -> Deferred[list[str]]:
        d = resolver.resolve(host)

        def nothing(failure: Failure) -> list[str]:
            failure.trap(DNSLookupError)
            return []

        return d.addErrback(nothing)
    return resolve
