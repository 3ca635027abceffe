"""Twisted endpoints for the QUIC transport: every proxied connection is one QUIC stream.

:class:`QUICServerEndpoint` listens on one UDP port; each client address is one QUIC
connection (V2Ray's and vtwist's clients use one socket per connection) and each stream the
client opens gets a protocol from the factory. :class:`QUICClientEndpoint` opens a stream on
a pooled connection to the same server with the same settings (as V2Ray's client reuses
its connections), or dials a new connection from a new UDP socket when none has room.

Endpoint strings: ``quic:port=443[:interface=...][:security=aes-128-gcm][:key=...]
[:header=srtp]`` (server, V2Ray's self-signed internal certificate) and
``quic:host=...:port=443[:...same options]`` (client, verifying nothing, as V2Ray's client
does without tlsSettings).
"""

from __future__ import annotations

import socket
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from twisted.internet import address, defer, error
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from vtwist.transport.quic.connection import FlowQuicConnection, QuicSession
from vtwist.transport.quic.packet import PacketCodec
from vtwist.transport.quic.sender import datagram_writer
from vtwist.transport.quic.settings import QUICSettings
from vtwist.transport.quic.tlsconfig import (
    HANDSHAKE_TIMEOUT,
    SERVER_MAX_STREAMS,
    STREAM_WINDOW,
    client_configuration,
    server_configuration,
)
from vtwist.transport.reuseport import listen_udp

log = Logger()
#: A client opens a new connection once this many streams are in use on each one.
CLIENT_MAX_STREAMS = SERVER_MAX_STREAMS


#: UDP socket buffers asked for (as quic-go asks for 2.5 MB): bursts wait there, not dropped.
SOCKET_BUFFER = 2 << 20


def _buffers(udp: Any) -> None:
    """Ask for larger socket buffers (best effort: the kernel caps them)."""
    sock = getattr(udp, "socket", None)
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass


def _udp_address(ip: str, port: int) -> Any:
    if ":" in ip:
        return address.IPv6Address("UDP", ip, port)
    return address.IPv4Address("UDP", ip, port)


# -- server ------------------------------------------------------------------------------
class QuicListener(DatagramProtocol):
    """The UDP protocol of a listening port: one :class:`QuicSession` per client, found by
    the datagram's source address, else by its destination connection ID (a client whose
    address changed: aioquic then validates the new path)."""

    def __init__(self, reactor: Any, factory: IProtocolFactory, settings: QUICSettings,
                 tls: Any) -> None:
        self.reactor = reactor
        self.factory = factory
        self.settings = settings
        self.codec = PacketCodec(settings)
        self.configuration = server_configuration(tls, self.codec.overhead)
        self.sessions: dict[Any, QuicSession] = {}
        self.cids: dict[bytes, QuicSession] = {}
        self.closing = False
        self.send: Any = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Route to the address's connection, or start one on a client Initial."""
        session = self.sessions.get(addr)
        if session is not None:
            session.datagramReceived(data, addr)
            return
        if self.closing:
            return
        datagram = self.codec.open(data)
        if datagram is None:
            return
        try:
            header = pull_quic_header(Buffer(data=datagram), host_cid_length=12)
        except ValueError:
            return
        known = self.cids.get(header.destination_cid)
        if known is not None:
            self.sessions[addr] = known
            known.datagramReceived(data, addr)
            return
        versions = self.configuration.supported_versions
        if header.version is not None and header.version not in versions:
            self.transport.write(self.codec.seal(encode_quic_version_negotiation(
                source_cid=header.destination_cid, destination_cid=header.source_cid,
                supported_versions=versions)), addr)
            return
        if header.packet_type != QuicPacketType.INITIAL or len(datagram) < 1200:
            return
        quic = FlowQuicConnection(configuration=self.configuration, window=STREAM_WINDOW,
                                  original_destination_connection_id=header.destination_cid)
        host = self.transport.getHost()
        if self.send is None:
            self.send = datagram_writer(self.transport)
        session = QuicSession(self.reactor, quic, self.codec, self.send,
                              _udp_address(addr[0], addr[1]),
                              _udp_address(host.host, host.port),
                              on_stream=self._stream, on_closed=self._closed,
                              on_cid=self._cid)
        self.sessions[addr] = session
        self.cids[quic.host_cid] = session
        deadline = self.reactor.callLater(HANDSHAKE_TIMEOUT, session.abort,
                                          "handshake timed out")
        session.handshake.addBoth(lambda r: (deadline.active() and deadline.cancel(), r)[1])
        session.handshake.addErrback(lambda _: None)
        session.datagramReceived(data, addr)

    def _stream(self, session: QuicSession, stream_id: int) -> Any:
        if self.closing:
            return None
        return self.factory.buildProtocol(session.peer)

    def _cid(self, session: QuicSession, cid: bytes, issued: bool) -> None:
        if issued:
            self.cids[cid] = session
        elif self.cids.get(cid) is session:
            del self.cids[cid]

    def _closed(self, session: QuicSession) -> None:
        for table in (self.sessions, self.cids):
            for key, known in list(table.items()):
                if known is session:
                    del table[key]

    def close(self) -> None:
        """Close every connection (CONNECTION_CLOSE sent), accept no more."""
        self.closing = True
        for session in list(self.sessions.values()):
            session.close("server stopped")
            session.abort("server stopped")
        self.sessions.clear()
        self.cids.clear()


@implementer(IListeningPort)
class QUICListeningPort:
    """The listening UDP port and its connections."""

    def __init__(self, udp: Any, listener: QuicListener) -> None:
        self.udp = udp
        self.listener = listener

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> defer.Deferred:
        """Close the connections, then the socket."""
        self.listener.close()
        return defer.maybeDeferred(self.udp.stopListening)

    def getHost(self) -> Any:
        """The UDP address (with the real port when 0 was asked for)."""
        return self.udp.getHost()


@implementer(IStreamServerEndpoint)
class QUICServerEndpoint:
    """Listen for QUIC connections on a UDP port; ``tls`` is a TLSSettings or None."""

    def __init__(self, reactor: Any, port: int, interface: str = "",
                 settings: QUICSettings | None = None, tls: Any = None) -> None:
        self.reactor = reactor
        self.port = port
        self.interface = interface
        self.settings = settings or QUICSettings()
        self.tls = tls

    def listen(self, protocolFactory: IProtocolFactory) -> defer.Deferred:
        """Start listening; fires with an IListeningPort."""
        try:
            listener = QuicListener(self.reactor, protocolFactory, self.settings, self.tls)
            udp = listen_udp(self.reactor, self.port, listener, interface=self.interface,
                             maxPacketSize=65536)  # SO_REUSEPORT with --workers
            _buffers(udp)
        except Exception:  # noqa: BLE001 - CannotListenError, a bad certificate ...
            return defer.fail()
        return defer.succeed(QUICListeningPort(udp, listener))


# -- client ------------------------------------------------------------------------------
class QuicClientSocket(DatagramProtocol):
    """A client's own UDP socket carrying one QUIC connection."""

    def __init__(self) -> None:
        self.session: QuicSession | None = None

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """To the connection."""
        if self.session is not None:
            self.session.datagramReceived(data, addr)


class ConnectionPool:
    """The client's QUIC connections by (server address, settings), reused for new streams."""

    def __init__(self) -> None:
        self.sessions: dict[Any, list[QuicSession]] = {}

    def pick(self, key: Any) -> QuicSession | None:
        """A live connection with room for another stream."""
        for session in self.sessions.get(key, []):
            if not session.closed and session.handshake.called and \
                    session.openStreams < CLIENT_MAX_STREAMS:
                return session
        return None

    def add(self, key: Any, session: QuicSession) -> None:
        """Keep ``session`` for reuse until it closes."""
        self.sessions.setdefault(key, []).append(session)

    def remove(self, key: Any, session: QuicSession) -> None:
        """Forget a closed connection."""
        live = [s for s in self.sessions.get(key, []) if s is not session]
        if live:
            self.sessions[key] = live
        else:
            self.sessions.pop(key, None)

    def close_all(self) -> None:
        """Close every pooled connection now (tests; shutting down)."""
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                session.close("client closed")
                session.abort("client closed")
        self.sessions.clear()


#: The process's client connections.
POOL = ConnectionPool()


@implementer(IStreamClientEndpoint)
class QUICClientEndpoint:
    """Open a QUIC stream to ``host:port``; ``tls`` is a TLSSettings or None."""

    def __init__(self, reactor: Any, host: str, port: int,
                 settings: QUICSettings | None = None, tls: Any = None,
                 pool: ConnectionPool | None = None) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.settings = settings or QUICSettings()
        self.tls = tls
        self.pool = POOL if pool is None else pool

    def connect(self, protocolFactory: IProtocolFactory) -> defer.Deferred:
        """Fires with the protocol once its stream is open."""
        return defer.ensureDeferred(self._connect(protocolFactory))

    async def _resolve(self) -> str:
        host = self.host.strip("[]")
        if isIPAddress(host) or isIPv6Address(host):
            return host
        try:
            return str(await self.reactor.resolve(host))
        except Exception as e:
            raise error.DNSLookupError(f"{self.host}: {e}") from e

    async def _connect(self, factory: IProtocolFactory) -> Any:
        ip = await self._resolve()
        key = (ip, self.port, self.settings, id(self.tls))
        session = self.pool.pick(key)
        if session is None:
            session = await self._dial(ip, key)
        proto = factory.buildProtocol(session.peer)
        if proto is None:
            raise error.ConnectionRefusedError("factory returned no protocol")
        session.openStream(proto)
        return proto

    async def _dial(self, ip: str, key: Any) -> QuicSession:
        codec = PacketCodec(self.settings)
        configuration = client_configuration(self.tls, self.host, codec.overhead)
        sock = QuicClientSocket()
        try:
            udp = self.reactor.listenUDP(0, sock, interface="::" if ":" in ip else "",
                                         maxPacketSize=65536)
        except error.CannotListenError as e:
            raise error.ConnectError(string=str(e)) from e
        _buffers(udp)
        quic = FlowQuicConnection(configuration=configuration, window=STREAM_WINDOW)
        local = udp.getHost()
        addr = (ip, self.port)

        def closed(session: QuicSession) -> None:
            self.pool.remove(key, session)
            udp.stopListening()

        session = QuicSession(self.reactor, quic, codec, datagram_writer(udp),
                              _udp_address(ip, self.port), _udp_address(local.host, local.port),
                              on_closed=closed)
        sock.session = session
        quic.connect(addr, now=self.reactor.seconds())
        session.pump()
        deadline = self.reactor.callLater(HANDSHAKE_TIMEOUT, session.abort,
                                          "handshake timed out")
        try:
            await session.handshake
        finally:
            if deadline.active():
                deadline.cancel()
        self.pool.add(key, session)
        return session
