"""Shadowsocks inbound: the TCP side (one tunnel per connection) and the UDP listener.

A connection's salt, first chunks and address are read by the sans-IO
:class:`~vtwist.proxy.shadowsocks.codec.ServerHandshake`; then the decrypted stream goes to
the tunnel service as an ordinary transport
(:class:`~vtwist.proxy.shadowsocks.transport.ShadowsocksTransport`). A bad tag, a replayed
salt, a bad address or no address within the handshake timeout is never answered: the
shared :class:`~vtwist.proxy.guard.ProbeGuard` drains the connection and closes it after
the deadline plus a random delay, whatever the probe's length (V2Ray 4.34 drains a
key-dependent number of bytes instead). UDP: one packet tunnel per client source address.
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import Destination, normalize_host
from vtwist.policy import DEFAULT_POLICY, Policy
from vtwist.proxy.guard import GuardedServerProtocol, ProbeGuard, SilentReply
from vtwist.proxy.shadowsocks.aead import CipherError, StreamDecoder, StreamEncoder
from vtwist.proxy.shadowsocks.codec import (
    Accepted,
    Refused,
    RequestError,
    ServerHandshake,
    decode_packet,
    encode_packet,
)
from vtwist.proxy.shadowsocks.replay import salt_filter
from vtwist.proxy.shadowsocks.transport import ShadowsocksTransport
from vtwist.sansio import NEED_DATA
from vtwist.transport.layer import set_no_delay
from vtwist.transport.reuseport import listen_udp
from vtwist.transport.stack import server_endpoint
from vtwist.tunnel.inbound import InboundFactory
from vtwist.tunnel.packets import PacketTunnel
from vtwist.tunnel.service import TunnelService

if TYPE_CHECKING:
    from vtwist.proxy.shadowsocks.settings import ShadowsocksInboundSettings

log = Logger(namespace="vtwist.shadowsocks.inbound")

#: Client sources with an open UDP tunnel per listening port; the least recently used one
#: is closed beyond it.
MAX_FLOWS = 1024
MAX_DATAGRAM = 65535


class Phase(Enum):
    """Where one Shadowsocks connection is."""

    HANDSHAKE = "handshake"
    PROBE = "probe"
    STREAM = "stream"
    DONE = "done"


@implementer(IHalfCloseableProtocol)
class ShadowsocksServerProtocol(GuardedServerProtocol):
    """One inbound Shadowsocks TCP connection."""

    protocolName = "shadowsocks"

    def __init__(self, factory: ShadowsocksServerFactory) -> None:
        self.factory = factory
        self.phase = Phase.HANDSHAKE
        self.handshake: ServerHandshake | None = None
        self.decoder: StreamDecoder | None = None
        self.inner: ShadowsocksTransport | None = None
        self.tunnel: Any = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """Start the handshake deadline."""
        f = self.factory
        set_no_delay(self.transport)
        self.handshake = ServerHandshake(f.settings.account, f.salts)
        self.startHandshakeTimer(f.userPolicy.handshake)

    def handshakeTimedOut(self) -> None:
        """No complete request in time: refused."""
        self._timer = None
        if self.phase is Phase.HANDSHAKE:
            self._refuse(f"no complete request within the handshake timeout "
                         f"({self.handshake.buffered} bytes)")  # type: ignore[union-attr]

    # -- input ------------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        """Handshake, then the decrypted stream; discarded when refused."""
        phase = self.phase
        if phase is Phase.STREAM:
            self._stream(data)
        elif phase is Phase.HANDSHAKE:
            result = self.handshake.feed(data)  # type: ignore[union-attr]
            if result is NEED_DATA:
                return
            self.handshake = None
            if isinstance(result, Refused):
                self._refuse(result.reason)
            else:
                self._accept(result)  # type: ignore[arg-type]
        elif self.hold is not None:
            self.hold.discard(data)

    def _accept(self, request: Accepted) -> None:
        self.handshakeDone()
        f = self.factory
        try:
            destination = Destination.tcp(request.host, request.port)
        except ValueError as e:
            self._refuse(f"bad destination: {e}")
            return
        f.accepted += 1
        self.phase = Phase.STREAM
        self.decoder = request.decoder
        self.inner = ShadowsocksTransport(self.transport,
                                          StreamEncoder(f.settings.account).encode)
        self.tunnel = f.tunnels.openStream(
            self.inner, destination, SilentReply(self._close), early=request.early, inbound_tag=f.tag,
            source=self._peer(), email=f.settings.email or None, policy=f.userPolicy,
            sniff=f.sniffing)
        if self.decoder.eof and self.tunnel is not None:
            self.tunnel.eof()

    def _stream(self, data: bytes) -> None:
        decoder = self.decoder
        try:
            payloads = decoder.feed(data)  # type: ignore[union-attr]
        except CipherError as e:
            log.info("shadowsocks from {peer}: {why}; closing", peer=self._peer(), why=e)
            self._close(abort=True)
            return
        if payloads:
            self.tunnel.receivedSequence(payloads)
        if decoder.eof:  # type: ignore[union-attr]
            self.tunnel.eof()

    # -- refusals ---------------------------------------------------------------------
    def _refuse(self, reason: str) -> None:
        """Never answer: one access line, then the guard drains and closes."""
        self.rejectClient(reason)
        self.phase = Phase.PROBE
        self.holdConnection(self.factory.guard)

    # -- ending -----------------------------------------------------------------------
    def _close(self, abort: bool = False) -> None:
        if self.phase is Phase.DONE:
            return
        tunnel = self.tunnel
        if tunnel is not None and tunnel.relay is not None and not abort:
            tunnel.close()  # the relay flushes both sides
            return
        self.phase = Phase.DONE
        self._cancelTimer()
        if tunnel is not None:
            self.tunnel = None
            tunnel.lost(None)
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """The client half-closed: at a chunk boundary that ends the uplink."""
        if self.phase is not Phase.STREAM:
            if self.phase is Phase.HANDSHAKE:
                self._refuse("closed before a complete request")
            return
        if self.decoder.at_boundary:  # type: ignore[union-attr]
            if not self.decoder.eof:  # type: ignore[union-attr]
                self.tunnel.eof()
        else:
            self._close(abort=True)

    def writeConnectionLost(self) -> None:
        """Our write side closed."""

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Release everything this connection held."""
        self.phase = Phase.DONE
        self._cancelTimer()
        self.releaseHold()
        if self.tunnel is not None:
            tunnel, self.tunnel = self.tunnel, None
            tunnel.lost(reason)


def _source(addr: tuple[str, int]) -> str:
    host = normalize_host(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class ShadowsocksDatagrams(DatagramProtocol):
    """The UDP listener of one Shadowsocks port: one packet tunnel per client source."""

    def __init__(self, factory: ShadowsocksServerFactory, max_flows: int = MAX_FLOWS) -> None:
        self.factory = factory
        self.max_flows = max_flows
        self.flows: OrderedDict[tuple[str, int], PacketTunnel] = OrderedDict()
        self.dropped = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """One packet from a client: decrypt, check the salt, send on."""
        f = self.factory
        client = (addr[0], addr[1])
        try:
            packet = decode_packet(f.settings.account, data)
            if packet.salt and not f.packet_salts.check(packet.salt):
                raise RequestError("replayed salt")
            destination = Destination.udp(packet.host, packet.port)
        except (RequestError, ValueError) as e:
            self.dropped += 1
            f.tunnels.reject(_source(client), "shadowsocks", f"bad UDP packet: {e}")
            return
        tunnel = self.flows.get(client)
        if tunnel is None:
            tunnel = self._open(client, destination)
            if tunnel is None:
                return
        else:
            self.flows.move_to_end(client)
        tunnel.send(packet.payload, destination)

    def _open(self, client: tuple[str, int], destination: Destination) -> PacketTunnel | None:
        f = self.factory
        while len(self.flows) >= self.max_flows:
            _, oldest = self.flows.popitem(last=False)
            oldest.close()
        holder: list[PacketTunnel] = []

        def onPacket(data: bytes, source: Destination) -> None:
            self._reply(client, data, source)

        def onClose() -> None:
            if holder and self.flows.get(client) is holder[0]:
                del self.flows[client]

        try:
            tunnel = f.tunnels.openPackets(
                destination, onPacket, onClose, inbound_tag=f.tag, source=_source(client),
                email=f.settings.email or None, idle_timeout=f.userPolicy.conn_idle,
                policy=f.userPolicy)
        except Exception as e:  # noqa: BLE001 - no outbound: drop, say why
            log.info("UDP to {dest} from {source}: {why}", dest=destination,
                     source=_source(client), why=e)
            return None
        holder.append(tunnel)
        if not tunnel.closed:
            self.flows[client] = tunnel
        return tunnel

    def _reply(self, client: tuple[str, int], data: bytes, source: Destination) -> None:
        if self.transport is None:
            return
        try:
            packet = encode_packet(self.factory.settings.account, source, data)
            self.transport.write(packet, client)
        except (OSError, ValueError) as e:
            log.debug("UDP to client {addr} failed: {e}", addr=client, e=e)

    def stopProtocol(self) -> None:
        """The port stopped listening: close every flow."""
        self.closeAll()

    def closeAll(self) -> None:
        """Close every flow."""
        flows = list(self.flows.values())
        self.flows.clear()
        for tunnel in flows:
            tunnel.close()


class ShadowsocksServerFactory(InboundFactory):
    """One Shadowsocks inbound: its TCP connections, its UDP listeners, its salt filters."""

    protocol = ShadowsocksServerProtocol  # type: ignore[assignment]

    def __init__(self, tunnels: TunnelService, settings: ShadowsocksInboundSettings,
                 policy: Policy = DEFAULT_POLICY, tag: str = "",
                 guard: ProbeGuard | None = None) -> None:
        super().__init__(tunnels, tag)
        self.settings = settings
        self.userPolicy = policy.level(settings.level)
        self.guard = guard or ProbeGuard()
        self.salts = salt_filter()  # shared by the workers with --workers
        self.packet_salts = salt_filter(packets=True)
        self.accepted = 0
        self.refused = 0
        self.datagrams: list[ShadowsocksDatagrams] = []

    def streamEndpoint(self, reactor: Any, listen: str, port: int, stream: Any) -> Any:
        """The TCP listener, or none when ``network`` leaves tcp out (service.py hook)."""
        if "tcp" not in self.settings.networks:
            return None
        return server_endpoint(reactor, listen, port, stream)

    @property
    def listensDatagrams(self) -> bool:
        """True when ``network`` includes udp (service.py hook)."""
        return "udp" in self.settings.networks

    def listenDatagrams(self, reactor: Any, listen: str, port: int) -> Any:
        """Start the UDP listener on ``listen:port`` (service.py hook)."""
        protocol = ShadowsocksDatagrams(self)
        listening = listen_udp(reactor, port, protocol, interface=listen,
                               maxPacketSize=MAX_DATAGRAM)
        self.datagrams.append(protocol)
        return listening

    def closeAll(self) -> None:
        """Close every TCP connection and UDP flow of this inbound."""
        super().closeAll()
        for protocol in self.datagrams:
            protocol.closeAll()
