"""How one DNS query reaches one server: UDP, TCP (RFC 1035 length prefix) and DoH (RFC 8484
POST through ``twisted.web.client.Agent``).

Each sender is ``query(data, query_id) -> Deferred[bytes]`` (the raw answer whose ID is
``query_id``); cancelling the Deferred closes whatever it opened. Where the bytes go is a
:class:`Network`: :class:`DirectNetwork` uses the reactor's own sockets; the tunnel layer
provides a routed one (queries leave through the outbound routing picks for the dns tag).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.http_headers import Headers

from vtwist.address import parse_ip
from vtwist.dns.message import MAX_MESSAGE, BadAnswer, message_id

#: UDP: resend the query this often until the answer (or the timeout) comes.
UDP_RESEND = 1.0


class DatagramSocket(TypingProtocol):
    """A UDP flow to one server: ``send(data)`` and ``close()``."""

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class Network(TypingProtocol):
    """Where queries go: a UDP flow or a stream endpoint to ``host:port``."""

    def datagram(self, host: str, port: int,
                 received: Callable[[bytes], None]) -> DatagramSocket: ...

    def stream(self, host: str, port: int) -> IStreamClientEndpoint: ...


class _UDPProtocol(protocol.DatagramProtocol):
    def __init__(self, received: Callable[[bytes], None]) -> None:
        self.received = received

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.received(data)


class _DirectDatagram:
    def __init__(self, reactor: Any, host: str, port: int,
                 received: Callable[[bytes], None]) -> None:
        self.address = (host, port)
        interface = "::" if ":" in host else "0.0.0.0"
        self.port = reactor.listenUDP(0, _UDPProtocol(received), interface=interface,
                                      maxPacketSize=MAX_MESSAGE)

    def send(self, data: bytes) -> None:
        try:
            self.port.write(data, self.address)
        except OSError:  # unreachable network: the query times out like a lost one
            pass

    def close(self) -> None:
        self.port.stopListening()


class DirectNetwork:
    """Queries straight from this host (``*+local`` servers, and every server when the
    config has no router)."""

    def __init__(self, reactor: Any, connect_timeout: float = 10) -> None:
        self.reactor = reactor
        self.connect_timeout = connect_timeout

    def datagram(self, host: str, port: int,
                 received: Callable[[bytes], None]) -> DatagramSocket:
        """A UDP socket of its own (a fresh source port per query)."""
        return _DirectDatagram(self.reactor, host, port, received)

    def stream(self, host: str, port: int) -> IStreamClientEndpoint:
        """A TCP endpoint to an IP literal (server names are resolved before)."""
        ip = parse_ip(host)
        if ip is not None and ip.version == 6:
            return TCP6ClientEndpoint(self.reactor, str(ip), port, self.connect_timeout)
        return TCP4ClientEndpoint(self.reactor, host, port, self.connect_timeout)


def udp_query(network: Network, clock: Any, host: str, port: int) -> Callable[
        [bytes, int], defer.Deferred[bytes]]:
    """Queries over UDP: a fresh flow per query, resent each second, answers with another
    ID ignored (RFC 5452: they may be spoofed), the first with the right ID kept."""
    def query(data: bytes, query_id: int) -> defer.Deferred[bytes]:
        state: dict[str, Any] = {}

        def cancel(d: defer.Deferred[bytes]) -> None:
            finish()

        result: defer.Deferred[bytes] = defer.Deferred(cancel)

        def finish() -> None:
            timer = state.pop("timer", None)
            if timer is not None and timer.active():
                timer.cancel()
            flow = state.pop("flow", None)
            if flow is not None:
                flow.close()

        def received(answer: bytes) -> None:
            if result.called or message_id(answer) != query_id:
                return
            finish()
            result.callback(answer)

        def resend() -> None:
            state["flow"].send(data)
            state["timer"] = clock.callLater(UDP_RESEND, resend)

        try:
            state["flow"] = network.datagram(host, port, received)
        except Exception:  # noqa: BLE001 - no socket (EMFILE, no outbound): a failed query
            return defer.fail(Failure())
        resend()
        return result
    return query


class _TCPQuery(protocol.Protocol):
    """Send one length-prefixed query, read one length-prefixed answer."""

    def __init__(self, data: bytes, done: defer.Deferred[bytes]) -> None:
        self.data = data
        self.done = done
        self.buffer = b""

    def connectionMade(self) -> None:
        self.transport.write(struct.pack("!H", len(self.data)) + self.data)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < 2:
            return
        (size,) = struct.unpack("!H", self.buffer[:2])
        if len(self.buffer) >= 2 + size:
            answer = self.buffer[2:2 + size]
            self.transport.loseConnection()
            if not self.done.called:
                self.done.callback(answer)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if not self.done.called:
            self.done.errback(BadAnswer("the server closed the connection before answering"))


def tcp_query(network: Network, host: str, port: int) -> Callable[
        [bytes, int], defer.Deferred[bytes]]:
    """Queries over TCP, one connection each; an answer with another ID is an error."""
    def query(data: bytes, query_id: int) -> defer.Deferred[bytes]:
        state: dict[str, Any] = {}

        def cancel(d: defer.Deferred[bytes]) -> None:
            connecting = state.get("connecting")
            if connecting is not None and not connecting.called:
                connecting.cancel()
            proto = state.get("protocol")
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()

        done: defer.Deferred[bytes] = defer.Deferred(cancel)

        def build() -> _TCPQuery:
            state["protocol"] = _TCPQuery(data, done)
            return state["protocol"]

        def failed(failure: Failure) -> None:
            if not done.called:
                done.errback(failure)

        try:
            endpoint = network.stream(host, port)
            factory = protocol.Factory.forProtocol(build)
            factory.noisy = False  # one per query
            connecting = endpoint.connect(factory)
        except Exception:  # noqa: BLE001 - an outbound refusing synchronously
            return defer.fail(Failure())
        state["connecting"] = connecting
        connecting.addErrback(failed)
        return done.addCallback(_check_id, query_id)
    return query


def _check_id(answer: bytes, query_id: int) -> bytes:
    if message_id(answer) != query_id:
        raise BadAnswer(f"wrong ID {message_id(answer)} (expected {query_id})")
    return answer


class _BodyCollector(protocol.Protocol):
    """A response body, at most :data:`MAX_MESSAGE` bytes."""

    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        self.parts.append(data)
        if self.size > MAX_MESSAGE and not self.done.called:
            self.transport.stopProducing()
            self.done.errback(BadAnswer(f"oversized DoH answer (over {MAX_MESSAGE} bytes)"))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(BadAnswer(f"DoH answer cut short: {reason.getErrorMessage()}"))


def doh_query(agent: Any, url: str) -> Callable[[bytes, int], defer.Deferred[bytes]]:
    """Queries over DoH (RFC 8484 POST, ``application/dns-message``) with ``agent``."""
    headers = {b"Content-Type": [b"application/dns-message"],
               b"Accept": [b"application/dns-message"]}

    def query(data: bytes, query_id: int) -> defer.Deferred[bytes]:
        request = agent.request(b"POST", url.encode("ascii"), Headers(headers),
                                FileBodyProducer(io.BytesIO(data)))

        def got(response: Any) -> defer.Deferred[bytes]:
            body: defer.Deferred[bytes] = defer.Deferred()
            response.deliverBody(_BodyCollector(body))  # read even an error's body: the
            if response.code == 200:                    # connection then goes back to the pool
                return body

            def refuse(_: Any) -> bytes:
                raise BadAnswer(f"DoH server answered HTTP {response.code}")
            return body.addBoth(refuse)

        return request.addCallback(got).addCallback(_check_id, query_id)
    return query
