"""The internal DNS a ``dns`` section describes (V2Ray 4.34's ``app/dns``).

:meth:`DnsResolver.resolve` answers from ``hosts`` first (aliases followed), then from the
cache, then asks the servers: those whose ``domains`` match the name first (in config
order), then the others. One server's answer counts when its addresses pass its
``expectIPs``; a timeout, SERVFAIL/REFUSED, a malformed answer, a connection failure or an
``expectIPs`` miss moves on to the next server; NXDOMAIN or an empty NOERROR answer ends the
lookup (the name has no such address). Answers are cached for their TTL (NXDOMAIN and empty
answers for a minute), and concurrent lookups of one name share one query.

Server names (a DoH host, a UDP server given as a domain) are resolved by ``hosts`` and the
system resolver, never by the servers themselves (no lookup loops).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

from vtwist.dns import message as wire
from vtwist.dns.cache import StaticHosts, TTLCache
from vtwist.dns.endpoint import ResolvingEndpoint
from vtwist.dns.settings import (
    DOH,
    DOH_LOCAL,
    LOCALHOST,
    TCP,
    TCP_LOCAL,
    UDP,
    UDP_LOCAL,
    DnsConfig,
    NameServer,
)
from vtwist.dns.system import ANY, V4, V6, NoAddress, NoSuchDomain, SystemResolver, literal
from vtwist.dns.transports import DirectNetwork, Network, doh_query, tcp_query, udp_query
from vtwist.routing.matcher import ip_of

log = Logger(namespace="vtwist.dns")

Query = Callable[[bytes, int], "defer.Deferred[bytes]"]


class Stop(Exception):
    """The lookup ends here (NXDOMAIN, or no address of the family asked for)."""

    def __init__(self, why: str, nxdomain: bool = False) -> None:
        super().__init__(why)
        self.nxdomain = nxdomain


class Skip(Exception):
    """This server gave nothing usable; the next one is asked."""


class _EndpointFactory:
    """Agent's endpoints for one DoH server: TLS (checked against ``trust_root``) over a
    stream from ``network``."""

    def __init__(self, network: Network, server: NameServer, trust_root: Any,
                 bootstrap: Any, clock: Any) -> None:
        self.network, self.server, self.trust_root = network, server, trust_root
        self.bootstrap, self.clock = bootstrap, clock

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        host, port = self.server.host, self.server.port
        if self.bootstrap is not None and ip_of(host) is None:  # each address in turn
            base: IStreamClientEndpoint = ResolvingEndpoint(
                self.bootstrap, host, lambda ip: self.network.stream(ip, port),
                clock=self.clock)
        else:
            base = self.network.stream(host, port)
        return wrapClientTLS(optionsForClientTLS(host, self.trust_root), base)


class DnsResolver:
    """The internal DNS (see the module docstring). ``direct`` carries ``*+local``
    queries, ``routed`` the others (None: direct too); ``system`` answers ``localhost``
    servers and server names; ``trust_root`` checks DoH certificates (None: the platform's)."""

    def __init__(self, config: DnsConfig, reactor: Any, *, direct: Network | None = None,
                 routed: Network | None = None, system: Any = None,
                 trust_root: Any = None) -> None:
        self.config = config
        self.reactor = reactor
        self.timeout = config.timeout
        self.hosts = StaticHosts(config.hosts)
        self.cache = TTLCache()
        #: names that do not exist / have no address of a family: ("nx",) or ("none",),
        #: for wire.NEGATIVE_TTL (V2Ray keeps them too)
        self.negative = TTLCache()
        self.system = system if system is not None else SystemResolver(reactor)
        self.direct = direct if direct is not None else DirectNetwork(reactor)
        self.routed = routed if routed is not None else self.direct
        self.trust_root = trust_root
        self._pending: dict[tuple[str, int], defer.Deferred[tuple[tuple[str, ...], int]]] = {}
        self._waiters: dict[tuple[str, int], list[defer.Deferred[list[str]]]] = {}
        self._starting: set[tuple[str, int]] = set()
        self._senders: dict[int, Query] = {}
        self._pools: list[HTTPConnectionPool] = []
        #: server names (resolved by hosts + the system, never by the servers)
        self.server_names = {s.host.lower() for s in config.servers
                             if s.host and ip_of(s.host) is None}
        #: queries sent, per server name (tests and the debug log read it)
        self.sent: dict[str, int] = {}

    # -- the public interface -----------------------------------------------------------
    def resolve(self, host: str, family: int = ANY) -> defer.Deferred[list[str]]:
        """``host``'s addresses (``family`` 4 or 6 keeps one); fails with DNSLookupError."""
        name = host.strip("[]").rstrip(".").lower()
        if not name:
            return defer.fail(DNSLookupError("empty domain name"))
        known = literal(name, family)
        if known is not None:
            return known
        for _ in range(6):
            found = self.hosts.lookup(name, family)
            if found is None:
                break
            if isinstance(found, tuple):
                if not found:
                    return defer.fail(NoAddress(f"{host}: hosts has no IPv{family} address"))
                return defer.succeed(list(found))
            log.debug("dns: {name} -> {alias} (hosts)", name=name, alias=found)
            if found == name:
                break
            name = found
        if name in self.server_names:
            return self.system.resolve(name, family)  # type: ignore[no-any-return]
        now = self.reactor.seconds()
        if not self.config.disable_cache:
            cached = self.cache.get(name, family, now)
            if cached is not None:
                return defer.succeed(list(cached))
            missing = self.negative.get(name, family, now)
            if missing is not None:
                kind = NoSuchDomain if missing == ("nx",) else NoAddress
                return defer.fail(kind(f"{host}: " + ("no such domain (NXDOMAIN, cached)"
                                                       if missing == ("nx",)
                                                       else "no address (cached)")))
        return self._shared(name, family)

    def close(self) -> defer.Deferred[Any]:
        """Close the DoH connection pools."""
        return defer.DeferredList([p.closeCachedConnections() for p in self._pools],
                                  consumeErrors=True)

    # -- concurrent-query collapse ---------------------------------------------------
    def _shared(self, name: str, family: int) -> defer.Deferred[list[str]]:
        key = (name, family)

        def cancel(d: defer.Deferred[list[str]]) -> None:
            waiters = self._waiters.get(key, [])
            if d in waiters:
                waiters.remove(d)

        if key in self._starting:  # asked again while sending its own query: a loop
            return defer.fail(DNSLookupError(
                f"{name}: looking it up needs {name} itself (the query goes through an "
                "outbound whose server is that name; route the dns tag's queries elsewhere)"))
        mine: defer.Deferred[list[str]] = defer.Deferred(cancel)
        self._waiters.setdefault(key, []).append(mine)
        if key in self._pending:
            return mine
        self._starting.add(key)
        try:
            lookup = defer.Deferred.fromCoroutine(self._lookup(name, family))
        finally:
            self._starting.discard(key)
        self._pending[key] = lookup

        def done(result: Any) -> None:
            self._pending.pop(key, None)
            waiters = self._waiters.pop(key, [])
            if isinstance(result, Failure):
                if not result.check(DNSLookupError):
                    log.failure("dns: lookup of {name} failed", result, name=name)
                    result = Failure(DNSLookupError(f"{name}: {result.getErrorMessage()}"))
                elif result.check(NoSuchDomain, NoAddress) and not self.config.disable_cache:
                    self.negative.put(name, family,
                                      ("nx",) if result.check(NoSuchDomain) else ("none",),
                                      wire.NEGATIVE_TTL, self.reactor.seconds())
                for w in waiters:
                    w.errback(result)
                return
            ips, ttl = result
            if not self.config.disable_cache:
                self.cache.put(name, family, ips, ttl, self.reactor.seconds())
            for w in waiters:
                w.callback(list(ips))

        lookup.addBoth(done)
        return mine

    # -- one lookup over the servers --------------------------------------------------
    def ordered(self, name: str) -> list[NameServer]:
        """The servers to ask for ``name``: domain matches first, then the rest."""
        servers = self.config.servers
        first = [s for s in servers if s.domains is not None and s.domains.match(name)]
        return first + [s for s in servers if s not in first]

    async def _lookup(self, name: str, family: int) -> tuple[tuple[str, ...], int]:
        if not self.config.servers:
            return tuple(await self.system.resolve(name, family)), wire.DEFAULT_TTL
        errors: list[str] = []
        for server in self.ordered(name):
            try:
                ips, ttl = await self._ask(server, name, family)
            except Skip as e:
                errors.append(f"{server.name}: {e}")
                log.debug("dns: {name} at {server}: {why}", name=name, server=server.name,
                          why=e)
                continue
            except Stop as e:
                kind = NoSuchDomain if e.nxdomain else NoAddress
                raise kind(f"{name}: {e} ({server.name})") from None
            if server.expect_ips is not None:
                kept = tuple(ip for ip in ips if ip_of(ip) in server.expect_ips)
                if not kept:
                    errors.append(f"{server.name}: no answer in expectIPs")
                    continue
                ips = kept
            log.debug("dns: {name} is {ips} ({server})", name=name, ips=", ".join(ips),
                      server=server.name)
            return ips, ttl
        raise DNSLookupError(f"{name}: " + ("; ".join(errors) or "no server answered"))

    async def _ask(self, server: NameServer, name: str,
                   family: int) -> tuple[tuple[str, ...], int]:
        """One server's addresses for ``name``: A and AAAA side by side for ANY."""
        if server.kind == LOCALHOST:
            try:
                ips = await self._timed(self.system.resolve(name, family))
            except DNSLookupError as e:
                raise Stop(str(e), nxdomain=isinstance(e, NoSuchDomain)) from None
            except (defer.TimeoutError, defer.CancelledError):
                raise Skip("timed out") from None
            return tuple(ips), wire.DEFAULT_TTL
        qtypes = {V4: [wire.A], V6: [wire.AAAA], ANY: [wire.A, wire.AAAA]}[family]
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(self._one(server, name, t)) for t in qtypes],
            consumeErrors=True)
        ips: list[str] = []
        ttls: list[int] = []
        failures: list[Failure] = []
        for ok, value in results:
            if ok:
                ips.extend(value.ips)
                if value.ips:
                    ttls.append(value.ttl)
            else:
                failures.append(value)
        if ips:
            return tuple(ips), min(ttls)
        for f in failures:
            if f.check(Skip):
                raise f.value
        for f in failures:
            raise f.value
        raise Stop("no address")

    async def _one(self, server: NameServer, name: str, qtype: int) -> wire.Answer:
        """One query of one type; raises Skip or Stop, or gives an answer with addresses
        or none."""
        query_id = random.getrandbits(16)
        try:
            data = wire.build_query(name, qtype, query_id, server.client_ip)
        except wire.BadAnswer as e:
            raise Stop(str(e)) from None
        transport = self._sender(server, tcp=False)
        answer = await self._exchange(server, transport, data, query_id, name, qtype)
        if answer.truncated and server.kind in (UDP, UDP_LOCAL):
            answer = await self._exchange(server, self._sender(server, tcp=True), data,
                                          query_id, name, qtype)
        if answer.rcode == wire.NXDOMAIN:
            raise Stop("no such domain (NXDOMAIN)", nxdomain=True)
        if answer.rcode != wire.NOERROR:
            raise Skip(f"response code {answer.rcode}"
                       + (" (SERVFAIL)" if answer.rcode == wire.SERVFAIL else ""))
        return answer

    async def _exchange(self, server: NameServer, transport: Query, data: bytes,
                        query_id: int, name: str, qtype: int) -> wire.Answer:
        self.sent[server.name] = self.sent.get(server.name, 0) + 1
        try:
            raw = await self._timed(transport(data, query_id))
            return wire.parse_answer(raw, query_id, name, qtype)
        except (defer.TimeoutError, defer.CancelledError):
            raise Skip("timed out") from None
        except wire.BadAnswer as e:
            raise Skip(str(e)) from None
        except (Skip, Stop):
            raise
        except Exception as e:  # noqa: BLE001 - connection refused/lost, TLS, HTTP errors
            raise Skip(f"{type(e).__name__}: {e}") from None

    def _timed(self, d: defer.Deferred[Any]) -> defer.Deferred[Any]:
        return d.addTimeout(self.timeout, self.reactor)

    # -- the senders ------------------------------------------------------------------
    def _network(self, server: NameServer) -> Network:
        return self.direct if server.kind in (UDP_LOCAL, TCP_LOCAL, DOH_LOCAL) else self.routed

    def _bootstrap(self, host: str) -> defer.Deferred[str]:
        """A server name's first address (hosts, then the system resolver)."""
        return self.resolve(host).addCallback(lambda ips: ips[0])

    def _sender(self, server: NameServer, tcp: bool) -> Query:
        key = id(server) * 2 + int(tcp)
        sender = self._senders.get(key)
        if sender is not None:
            return sender
        network = self._network(server)
        if server.kind in (DOH, DOH_LOCAL):
            direct = network is self.direct
            pool = HTTPConnectionPool(self.reactor, persistent=True)
            pool.maxPersistentPerHost = 2
            self._pools.append(pool)
            factory = _EndpointFactory(network, server, self.trust_root,
                                       self if direct else None, self.reactor)
            agent = Agent.usingEndpointFactory(self.reactor, factory, pool=pool)
            sender = doh_query(agent, server.url)
        else:
            sender = self._plain_sender(server, network, tcp or server.kind in (TCP, TCP_LOCAL))
        self._senders[key] = sender
        return sender

    def _plain_sender(self, server: NameServer, network: Network, tcp: bool) -> Query:
        """UDP / TCP to the server; a server given by name is resolved first when direct."""
        def make(host: str) -> Query:
            if tcp:
                return tcp_query(network, host, server.port)
            return udp_query(network, self.reactor, host, server.port)

        if ip_of(server.host) is not None or network is not self.direct:
            return make(server.host)

        def query(data: bytes, query_id: int) -> defer.Deferred[bytes]:
            return self._bootstrap(server.host).addCallback(
                lambda ip: make(ip)(data, query_id))
        return query


def build_resolver(config: DnsConfig | None, reactor: Any, routed: Network | None = None,
                   trust_root: Any = None) -> Any:
    """The resolver for a config: the internal DNS when it has a ``dns`` section, else the
    system resolver."""
    if config is None:
        return SystemResolver(reactor)
    return DnsResolver(config, reactor, routed=routed, trust_root=trust_root)
