"""Local DNS servers for the tests: ``twisted.names.server`` over UDP and TCP answering from a
:class:`Zone`, a raw UDP server that sends whatever bytes a test wants (malformed, wrong ID,
oversized answers), and a DoH server (twisted.web over TLS with a test CA)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol, ssl
from twisted.names import dns, error, server
from twisted.web import resource
from twisted.web.server import Site

from tests.certs import make_ca
from tests.netutil import wait_until


class Zone:
    """A twisted.names resolver answering A/AAAA from ``records`` (name -> IPs); other names
    are NXDOMAIN. ``mode``: "ok", "servfail" or "silent" (never answers). ``gate``, when
    set, holds every answer until it fires. ``queries`` records (name, type) asked."""

    def __init__(self, records: dict[str, list[str]], ttl: int = 300) -> None:
        self.records = records
        self.ttl = ttl
        self.mode = "ok"
        self.gate: defer.Deferred[None] | None = None
        self.queries: list[tuple[str, int]] = []
        self.client_subnets: list[bytes] = []
        #: TXT records (name -> text), answered for TXT queries
        self.txt: dict[str, str] = {}

    def query(self, query: dns.Query, timeout: Any = None) -> defer.Deferred[Any]:
        name = query.name.name.decode().lower()
        self.queries.append((name, query.type))
        if self.mode == "servfail":
            return defer.fail(error.DNSServerError("test"))
        if self.mode == "silent":
            return defer.Deferred()
        if query.type == dns.TXT and name in self.txt:
            return defer.succeed(([dns.RRHeader(name.encode(), dns.TXT, ttl=self.ttl,
                                                payload=dns.Record_TXT(self.txt[name].encode(),
                                                                       ttl=self.ttl))], [], []))
        if name not in self.records:
            return defer.fail(error.DomainError(name))
        answers = []
        for ip in self.records[name]:
            if ipaddress.ip_address(ip).version == 4 and query.type == dns.A:
                answers.append(dns.RRHeader(name.encode(), dns.A, ttl=self.ttl,
                                            payload=dns.Record_A(ip, ttl=self.ttl)))
            elif ipaddress.ip_address(ip).version == 6 and query.type == dns.AAAA:
                answers.append(dns.RRHeader(name.encode(), dns.AAAA, ttl=self.ttl,
                                            payload=dns.Record_AAAA(ip, ttl=self.ttl)))
        result = (answers, [], [])
        if self.gate is not None:
            return self.gate.addCallback(lambda _: result)
        return defer.succeed(result)


class QuietDNSFactory(server.DNSServerFactory):
    """SERVFAIL without logging the resolver's error (trial would count it)."""

    def gotResolverError(self, failure: Any, protocol: Any, message: Any, address: Any) -> None:
        code = dns.ENAME
        if failure.check(error.DNSServerError) or not failure.check(error.DomainError):
            code = dns.ESERVER
        self.sendReply(protocol, self._responseFromMessage(message=message, rCode=code),
                       address)

    def handleQuery(self, message: Any, protocol: Any, address: Any) -> Any:
        for rr in message.additional:
            if rr.type == dns.OPT:
                self.zone.client_subnets.append(rr.payload.data)
        return super().handleQuery(message, protocol, address)


def start_dns(reactor: Any, zone: Zone, test: Any) -> int:
    """UDP and TCP DNS on one 127.0.0.1 port answering from ``zone``; returns the port."""
    factory = QuietDNSFactory(clients=[zone])
    factory.zone = zone
    udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    test.addCleanup(udp.stopListening)
    port = udp.getHost().port
    try:
        tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
    except Exception:  # noqa: BLE001 - the TCP port is taken: try another pair
        return start_dns(reactor, zone, test)
    test.addCleanup(tcp.stopListening)
    return port


class RawUDP(protocol.DatagramProtocol):
    """Answers each query with ``answer(query_bytes) -> list of datagrams``."""

    def __init__(self, answer: Callable[[bytes], list[bytes]]) -> None:
        self.answer = answer
        self.received: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        for datagram in self.answer(data):
            self.transport.write(datagram, addr)


def start_raw_udp(reactor: Any, answer: Callable[[bytes], list[bytes]], test: Any) -> RawUDP:
    """A raw UDP answerer on 127.0.0.1 (its port: ``.transport.getHost().port``)."""
    proto = RawUDP(answer)
    port = reactor.listenUDP(0, proto, interface="127.0.0.1")
    test.addCleanup(port.stopListening)
    return proto


def reply_to(query: bytes, ips: list[str], ttl: int = 300, query_id: int | None = None,
             rcode: int = dns.OK) -> bytes:
    """An answer to the raw ``query`` with ``ips`` (ID overridable)."""
    q = dns.Message()
    q.fromStr(query)
    r = dns.Message(id=q.id if query_id is None else query_id, answer=1, recDes=1, recAv=1,
                    rCode=rcode, maxSize=65535)
    r.queries = q.queries
    name = q.queries[0].name.name
    for ip in ips:
        if ipaddress.ip_address(ip).version == 4:
            r.answers.append(dns.RRHeader(name, dns.A, ttl=ttl, payload=dns.Record_A(ip)))
        else:
            r.answers.append(dns.RRHeader(name, dns.AAAA, ttl=ttl, payload=dns.Record_AAAA(ip)))
    return bytes(r.toStr())


class _TrackingSite(Site):
    """A Site that knows its open connections."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.open: set[Any] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        site = self
        lost = channel.connectionLost

        def connectionLost(reason: Any) -> None:
            site.open.discard(channel)
            lost(reason)

        channel.connectionLost = connectionLost
        self.open.add(channel)
        return channel


class DoHResource(resource.Resource):
    """RFC 8484 POST answering from a Zone through the same factory logic."""

    isLeaf = True

    def __init__(self, zone: Zone, status: int = 200) -> None:
        super().__init__()
        self.zone = zone
        self.status = status
        self.requests = 0
        #: when set, every answer is these bytes instead
        self.raw: bytes | None = None

    def render_POST(self, request: Any) -> Any:
        self.requests += 1
        body = request.content.read()
        if self.raw is not None:
            return self.raw
        if self.status != 200:
            request.setResponseCode(self.status)
            return b"no"
        query = dns.Message()
        query.fromStr(body)
        q = query.queries[0]

        def answer(result: Any) -> None:
            answers, _, _ = result
            r = dns.Message(id=query.id, answer=1, recDes=1, recAv=1)
            r.queries = query.queries
            r.answers = answers
            request.setHeader(b"content-type", b"application/dns-message")
            request.write(r.toStr())
            request.finish()

        def failed(failure: Any) -> None:
            code = dns.ENAME if failure.check(error.DomainError) else dns.ESERVER
            r = dns.Message(id=query.id, answer=1, rCode=code)
            r.queries = query.queries
            request.write(r.toStr())
            request.finish()

        self.zone.query(q).addCallbacks(answer, failed)
        from twisted.web.server import NOT_DONE_YET
        return NOT_DONE_YET


def start_doh(reactor: Any, zone: Zone, test: Any,
              status: int = 200) -> tuple[int, Any, DoHResource]:
    """A DoH server on 127.0.0.1 with a certificate for ``localhost`` from a test CA;
    returns (port, the CA to trust, the resource)."""
    ca = make_ca()
    cert = ca.issue("localhost", "127.0.0.1")
    key = ssl.PrivateCertificate.loadPEM(cert.key_pem + cert.cert_pem)
    res = DoHResource(zone, status)
    site = _TrackingSite(res)
    site.noisy = False
    port = reactor.listenSSL(0, site, key.options(), interface="127.0.0.1")

    async def closed() -> None:
        await port.stopListening()
        for channel in list(site.open):
            if getattr(channel, "transport", None) is not None:
                channel.transport.abortConnection()
        await wait_until(lambda: not site.open, "the DoH server's connections closed")

    test.addCleanup(lambda: defer.Deferred.fromCoroutine(closed()))
    return port.getHost().port, ssl.Certificate.loadPEM(ca.cert_pem), res
