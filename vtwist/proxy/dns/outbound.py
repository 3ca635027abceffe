"""The ``dns`` outbound at run time (V2Ray 4.34's ``proxy/dns``).

DNS queries routed to it — UDP datagrams, or a TCP stream of length-prefixed messages —
are read one message at a time. A query with one A or AAAA question is answered from the
config's resolver (the internal DNS; TTL 600 and the authoritative flag, as 4.34); NXDOMAIN
answers NXDOMAIN, a name with no such address an empty answer, any other failure SERVFAIL
(4.34 sends nothing then; a client waits out its timeout). Every other query is forwarded
to ``address``:``port`` over ``network`` (each defaulting to the query's own) and the
answer relayed back: over TCP through the outbound's dialer (streamSettings, or the
``proxySettings`` outbound), over UDP from a socket of its own, or, with ``proxySettings``,
through that outbound's UDP path (V2Ray 4.34 dials ``udp:`` through the proxy outbound too).
Malformed messages are dropped.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.names import dns
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, normalize_host, parse_ip
from vtwist.dns.message import BadAnswer, parse_message
from vtwist.dns.system import V4, V6, NoAddress, NoSuchDomain, SystemResolver
from vtwist.dns.transports import DirectNetwork, tcp_query
from vtwist.interfaces import IOutbound, IPacketSession
from vtwist.proxy.dns.settings import DnsOutboundSettings
from vtwist.proxy.local import LocalTransport
from vtwist.tunnel.dialer import packet_path

log = Logger(namespace="vtwist.dns.outbound")

#: TTL of the answers the outbound makes itself (V2Ray 4.34: 600 s).
ANSWER_TTL = 600
#: A forwarded query gives up after this long.
FORWARD_TIMEOUT = 8.0
#: An answer the outbound made is reused for the same question (same bytes but the ID) for
#: this long: the codec costs more than the lookup, and a busy client repeats itself.
MADE_ANSWER_SECONDS = 2.0
MADE_ANSWERS = 1024


def answer_query(query: dns.Message, ips: list[str], rcode: int) -> bytes:
    """The answer to ``query`` (one A/AAAA question) carrying ``ips``."""
    reply = dns.Message(id=query.id, answer=1, auth=1, recDes=1, recAv=1, rCode=rcode,
                        maxSize=65535)
    reply.queries = list(query.queries)
    question = query.queries[0]
    for ip in ips:
        if question.type == dns.A:
            record: Any = dns.Record_A(ip, ttl=ANSWER_TTL)
        else:
            record = dns.Record_AAAA(ip, ttl=ANSWER_TTL)
        reply.answers.append(dns.RRHeader(question.name.name, question.type, dns.IN,
                                          ANSWER_TTL, record))
    return bytes(reply.toStr())


class _ForwardedQueries:
    """Queries in flight, each under an ID of its own; an answer gets its query's ID back."""

    pending: dict[int, tuple[defer.Deferred[bytes], bytes, tuple[str, int]]]

    def register(self, data: bytes, address: tuple[str, int]
                 ) -> tuple[int, defer.Deferred[bytes]]:
        """A fresh ID for ``data`` (a DNS message) asked of ``address``, and the Deferred its
        answer fires; raises :class:`BadAnswer` when no ID is free."""
        for _ in range(8):
            new_id = random.getrandbits(16)
            if new_id not in self.pending:
                break
        else:
            raise BadAnswer("too many forwarded queries in flight")
        d: defer.Deferred[bytes] = defer.Deferred(lambda _: self.pending.pop(new_id, None))
        self.pending[new_id] = (d, data[:2], address)
        return new_id, d

    def answered(self, data: bytes, from_asked: Callable[[tuple[str, int]], bool]) -> None:
        """An answer: fire its query (with the query's own ID) unless it is late, too short,
        or ``from_asked`` says it did not come from where the query went."""
        if len(data) < 12:
            return
        key = struct.unpack("!H", data[:2])[0]
        entry = self.pending.get(key)
        if entry is None or not from_asked(entry[2]):
            return
        del self.pending[key]
        entry[0].callback(entry[1] + data[2:])


class UDPForwarder(_ForwardedQueries, DatagramProtocol):
    """One UDP socket carrying every forwarded query of an outbound (per address family):
    each gets an ID of its own on the way out, and its answer its own ID back."""

    def __init__(self, reactor: Any, v6: bool) -> None:
        self.pending = {}
        self.port = reactor.listenUDP(0, self, interface="::" if v6 else "0.0.0.0",
                                      maxPacketSize=65535)

    def query(self, data: bytes, address: tuple[str, int]) -> defer.Deferred[bytes]:
        """Send ``data`` (a DNS message) to ``address``; the answer, with ``data``'s ID."""
        try:
            new_id, d = self.register(data, address)
        except BadAnswer as e:
            return defer.fail(e)
        try:
            self.port.write(struct.pack("!H", new_id) + data[2:], address)
        except OSError as e:
            del self.pending[new_id]
            return defer.fail(e)
        return d

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        # only from the server asked (RFC 5452)
        self.answered(data, lambda asked: (normalize_host(addr[0]), addr[1]) == asked)

    def close(self) -> None:
        """Stop listening (pending queries are left to their timeouts)."""
        self.port.stopListening()


class ChainedUDPForwarder(_ForwardedQueries):
    """:class:`UDPForwarder`'s job through the ``proxySettings`` outbound ``via``: one
    ``packetSession`` on it (opened on the first query, again after it ended) carries
    every forwarded query, each with an ID of its own."""

    def __init__(self, via: Any) -> None:
        self.via = via
        self.session: Any = None
        self.pending = {}

    def query(self, data: bytes, address: tuple[str, int]) -> defer.Deferred[bytes]:
        """Send ``data`` to ``address`` (a host, which the proxy may resolve, and a port)
        through ``via``; the answer, with ``data``'s ID."""
        try:
            new_id, d = self.register(data, address)
        except BadAnswer as e:
            return defer.fail(e)
        if self.session is None:
            self.session = self.via.packetSession(self._received, self._ended)
        self.session.send(struct.pack("!H", new_id) + data[2:],
                          Destination.udp(address[0], address[1]))
        return d

    def _received(self, data: bytes, source: Destination) -> None:
        # only from the port asked (the proxy may have resolved the host)
        self.answered(data, lambda asked: source.port == asked[1])

    def _ended(self) -> None:
        self.session = None  # the next query opens another; pending ones time out

    def close(self) -> None:
        """Close the session (pending queries are left to their timeouts)."""
        session, self.session = self.session, None
        if session is not None:
            session.close()


class DnsHandler:
    """Answers or forwards one DNS message at a time; ``reply(bytes)`` gets the answers."""

    def __init__(self, outbound: DnsOutbound, target: Destination,
                 reply: Callable[[bytes], None]) -> None:
        self.outbound = outbound
        self.target = target
        self.reply = reply
        self.closed = False
        self.pending: set[defer.Deferred[Any]] = set()

    def handle(self, data: bytes) -> None:
        """One query message."""
        made = self.outbound.made_answer(data)
        if made is not None:  # the same question was answered a moment ago
            self.reply(made)
            return
        try:
            query = parse_message(data)
        except BadAnswer as e:
            log.info("dns outbound: dropped a query: {why}", why=e)
            return
        if (self.outbound.answers and not query.answer and len(query.queries) == 1
                and query.queries[0].type in (dns.A, dns.AAAA)
                and query.queries[0].cls == dns.IN):
            d = self._answer(query, data)
        else:
            d = self.outbound.forward(data, query.id, self.target)
        self.pending.add(d)

        def done(result: Any) -> None:
            self.pending.discard(d)
            if isinstance(result, Failure):
                if not result.check(defer.CancelledError):
                    log.info("dns outbound: no answer for a query: {why}",
                             why=result.getErrorMessage())
            elif result is not None and not self.closed:
                self.reply(result)

        d.addBoth(done)

    def _answer(self, query: dns.Message, raw: bytes) -> defer.Deferred[bytes]:
        question = query.queries[0]
        name = question.name.name.decode("ascii", "replace").rstrip(".")
        family = V4 if question.type == dns.A else V6
        d = self.outbound.resolver.resolve(name, family)

        def failed(failure: Failure) -> bytes:
            failure.trap(DNSLookupError)
            if failure.check(NoSuchDomain):
                return answer_query(query, [], dns.ENAME)
            if failure.check(NoAddress):
                return answer_query(query, [], dns.OK)
            return answer_query(query, [], dns.ESERVER)

        def answered(ips: list[str]) -> bytes:
            answer = answer_query(query, ips, dns.OK)
            self.outbound.keep_answer(raw, answer)
            return answer

        return d.addCallbacks(answered, failed)

    def close(self) -> None:
        """Stop answering; cancel what is still pending."""
        self.closed = True
        for d in list(self.pending):
            d.cancel()


class _DnsStreamTransport(LocalTransport):
    """The far end of a TCP DNS stream: writes are length-prefixed queries; answers go
    back to the protocol as length-prefixed messages."""

    def __init__(self, protocol: Any, outbound: DnsOutbound, target: Destination) -> None:
        super().__init__(protocol)
        self.buffer = b""
        self.handler = DnsHandler(outbound, target, self._answered)

    def _answered(self, data: bytes) -> None:
        if not self.disconnecting:
            self.protocol.dataReceived(struct.pack("!H", len(data)) + data)

    def write(self, data: bytes) -> None:
        """Bytes from the client: complete messages are handled."""
        if self.disconnecting:
            return
        self.buffer += data
        while len(self.buffer) >= 2:
            (size,) = struct.unpack("!H", self.buffer[:2])
            if len(self.buffer) < 2 + size:
                break
            message, self.buffer = self.buffer[2:2 + size], self.buffer[2 + size:]
            self.handler.handle(message)

    def writeSequence(self, data: Any) -> None:
        """As :meth:`write`."""
        self.write(b"".join(data))

    def closing(self) -> None:
        """Pending queries are cancelled."""
        self.handler.close()

    def loseWriteConnection(self) -> None:
        """The client is done sending: close once the answers are out."""
        d = defer.DeferredList(list(self.handler.pending), consumeErrors=True)
        d.addCallback(lambda _: self.loseConnection())


@implementer(IStreamClientEndpoint)
class DnsStreamEndpoint:
    """A TCP DNS stream answered by the outbound itself."""

    def __init__(self, outbound: DnsOutbound, target: Destination) -> None:
        self.outbound, self.target = outbound, target

    def connect(self, protocolFactory: Any) -> defer.Deferred[Any]:
        """Connected at once."""
        protocol = protocolFactory.buildProtocol(None)
        protocol.makeConnection(_DnsStreamTransport(protocol, self.outbound, self.target))
        return defer.succeed(protocol)


@implementer(IPacketSession)
class DnsPacketSession:
    """UDP DNS: each datagram one message; answers come back from where it was sent."""

    def __init__(self, outbound: DnsOutbound, onPacket: Callable[[bytes, Destination], None],
                 onClose: Callable[[], None]) -> None:
        self.outbound = outbound
        self.onPacket = onPacket
        self.onClose = onClose
        self.handlers: dict[Destination, DnsHandler] = {}

    def send(self, data: bytes, destination: Destination) -> None:
        """One query to ``destination``."""
        handler = self.handlers.get(destination)
        if handler is None:
            handler = self.handlers[destination] = DnsHandler(
                self.outbound, destination, lambda answer: self.onPacket(answer, destination))
        handler.handle(data)

    def close(self) -> None:
        """Cancel pending queries."""
        for handler in self.handlers.values():
            handler.close()
        self.handlers.clear()


@implementer(IOutbound)
class DnsOutbound:
    """Answers A/AAAA from ``resolver``, forwards the rest (see the module docstring)."""

    def __init__(self, reactor: Any, tag: str = "", settings: DnsOutboundSettings | None = None,
                 resolver: Any = None, dial: Callable[[str, int], Any] | None = None) -> None:
        self.reactor = reactor
        self.tag = tag
        self.settings = settings or DnsOutboundSettings()
        self.resolver = resolver if resolver is not None else SystemResolver(reactor)
        self.network = DirectNetwork(reactor)
        self.dial = dial
        self._forwarders: dict[bool, Any] = {}
        self._made: dict[bytes, tuple[float, bytes]] = {}
        #: False for the internal DNS's own queries routed here: forwarded, never answered
        #: from the internal DNS (that would loop; 4.34's isOwnLink)
        self.answers = True

    def for_own_queries(self) -> DnsOutbound:
        """This outbound as the internal DNS's own queries see it: forwarding only."""
        own = DnsOutbound(self.reactor, self.tag, self.settings, self.resolver, self.dial)
        own.answers = False
        own._forwarders = self._forwarders  # one set of sockets
        return own

    def endpointFor(self, destination: Destination) -> IStreamClientEndpoint:
        """A DNS-over-TCP stream handled here."""
        return DnsStreamEndpoint(self, destination)

    def packetSession(self, onPacket: Callable[[bytes, Destination], None],
                      onClose: Callable[[], None]) -> DnsPacketSession:
        """A UDP session handled here."""
        return DnsPacketSession(self, onPacket, onClose)

    def forward(self, data: bytes, query_id: int, target: Destination) -> defer.Deferred[bytes]:
        """Send one message on to the configured (or original) server; its answer."""
        host = self.settings.address or target.host
        port = self.settings.port or target.port
        network = self.settings.network or target.network

        async def go() -> bytes:
            via = packet_path(self.dial)
            if network != "tcp" and via is not None:  # proxySettings: the proxy's UDP
                sent = self._forwarder(False, via).query(data, (normalize_host(host), port))
                return await sent.addTimeout(FORWARD_TIMEOUT, self.reactor)  # type: ignore[no-any-return]
            ip = host if parse_ip(host) is not None else (await self.resolver.resolve(host))[0]
            if network == "tcp":
                sent = tcp_query(self._streams(), ip, port)(data, query_id)
            else:
                sent = self._forwarder(":" in ip).query(data, (normalize_host(ip), port))
            return await sent.addTimeout(FORWARD_TIMEOUT, self.reactor)  # type: ignore[no-any-return]

        return defer.Deferred.fromCoroutine(go())

    def made_answer(self, query: bytes) -> bytes | None:
        """The answer made for this question (``query`` but its ID) moments ago, if any."""
        if not self.answers or len(query) < 12:
            return None
        entry = self._made.get(query[2:])
        if entry is None:
            return None
        if entry[0] <= self.reactor.seconds():
            del self._made[query[2:]]
            return None
        return query[:2] + entry[1]

    def keep_answer(self, query: bytes, answer: bytes) -> None:
        """Remember ``answer`` to ``query`` for :data:`MADE_ANSWER_SECONDS`."""
        if len(self._made) >= MADE_ANSWERS:
            self._made.pop(next(iter(self._made)))
        self._made[query[2:]] = (self.reactor.seconds() + MADE_ANSWER_SECONDS, answer[2:])

    def _forwarder(self, v6: bool, via: Any = None) -> Any:
        forwarder = self._forwarders.get(v6)
        if forwarder is None:
            forwarder = self._forwarders[v6] = UDPForwarder(self.reactor, v6) \
                if via is None else ChainedUDPForwarder(via)
        return forwarder

    def close(self) -> None:
        """Close the forwarding sockets (the service stops)."""
        for forwarder in self._forwarders.values():
            forwarder.close()
        self._forwarders.clear()

    def _streams(self) -> Any:
        if self.dial is None:
            return self.network
        dial = self.dial

        class _Dialed:
            def stream(self, host: str, port: int) -> Any:
                return dial(host, port)

        return _Dialed()


def build_outbound(outbound: Any, ctx: Any) -> DnsOutbound:
    """The registry's builder: a DnsOutbound answering from the config's resolver."""
    return DnsOutbound(ctx.reactor, outbound.tag, outbound.settings, resolver=ctx.resolver,
                       dial=ctx.dialer(outbound))
