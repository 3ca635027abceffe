"""ResolvingEndpoint: resolve with a vtwist resolver, then try the addresses in turn."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.dns.endpoint import NEXT_ADDRESS_AFTER, ResolvingEndpoint
from vtwist.dns.system import V6


class _Resolver:
    def __init__(self, ips: list[str] | None) -> None:
        self.ips = ips
        self.asked: list[tuple[str, int]] = []

    def resolve(self, host: str, family: int = 0) -> defer.Deferred[list[str]]:
        self.asked.append((host, family))
        if self.ips is None:
            return defer.fail(DNSLookupError(host))
        return defer.succeed(self.ips)


class _Endpoint:
    """``behaviour``: "hang" (never connects), "refuse", or "ok"."""

    def __init__(self, log: list[str], ip: str, behaviour: str) -> None:
        self.log, self.ip, self.behaviour = log, ip, behaviour

    def connect(self, factory: Any) -> defer.Deferred[Any]:
        self.log.append(self.ip)
        if self.behaviour == "refuse":
            return defer.fail(ConnectionRefusedError())
        if self.behaviour == "ok":
            return defer.succeed(self.ip)
        return defer.Deferred(lambda d: self.log.append(f"cancel {self.ip}"))


class ResolvingEndpointTests(SynchronousTestCase):
    def endpoint(self, ips: list[str] | None, behaviours: dict[str, str],
                 clock: Clock | None = None, family: int = 0) -> tuple[Any, list[str], Any]:
        log: list[str] = []
        resolver = _Resolver(ips)
        endpoint = ResolvingEndpoint(resolver, "name.test",
                                     lambda ip: _Endpoint(log, ip, behaviours[ip]),
                                     family, clock)
        return endpoint, log, resolver

    def test_first_that_accepts(self) -> None:
        endpoint, log, resolver = self.endpoint(["::1", "127.0.0.1"],
                                                {"::1": "refuse", "127.0.0.1": "ok"},
                                                family=V6)
        self.assertEqual(self.successResultOf(endpoint.connect(None)), "127.0.0.1")
        self.assertEqual(log, ["::1", "127.0.0.1"])
        self.assertEqual(resolver.asked, [("name.test", V6)])

    def test_a_hanging_address_gives_way(self) -> None:
        clock = Clock()
        endpoint, log, _ = self.endpoint(["10.0.0.1", "10.0.0.2"],
                                         {"10.0.0.1": "hang", "10.0.0.2": "ok"}, clock)
        d = endpoint.connect(None)
        self.assertNoResult(d)
        clock.advance(NEXT_ADDRESS_AFTER)
        self.assertEqual(self.successResultOf(d), "10.0.0.2")
        self.assertEqual(log, ["10.0.0.1", "cancel 10.0.0.1", "10.0.0.2"])

    def test_last_address_keeps_its_own_timeout(self) -> None:
        clock = Clock()
        endpoint, log, _ = self.endpoint(["10.0.0.1"], {"10.0.0.1": "hang"}, clock)
        d = endpoint.connect(None)
        clock.advance(NEXT_ADDRESS_AFTER * 10)
        self.assertNoResult(d)  # the endpoint's own connect timeout decides

    def test_all_refuse(self) -> None:
        endpoint, log, _ = self.endpoint(["10.0.0.1", "10.0.0.2"],
                                         {"10.0.0.1": "refuse", "10.0.0.2": "refuse"})
        self.failureResultOf(endpoint.connect(None), ConnectionRefusedError)
        self.assertEqual(log, ["10.0.0.1", "10.0.0.2"])

    def test_lookup_failure(self) -> None:
        endpoint, log, _ = self.endpoint(None, {})
        self.failureResultOf(endpoint.connect(None), DNSLookupError)
        self.assertEqual(log, [])
