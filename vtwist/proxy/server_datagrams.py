"""Packets to and from one server's UDP address, for an outbound's packet session.

The Shadowsocks and SOCKS outbounds both send their UDP to a server address (the Shadowsocks
server, the SOCKS relay). :class:`ServerDatagrams` is that path, once:

* directly, a local UDP socket (the address resolved first when it is a name); only the
  server's own answers count, as V2Ray's socket is connected to it;
* with ``proxySettings`` (``via``, from :func:`vtwist.tunnel.dialer.packet_path`), the proxy
  outbound's packet session, as V2Ray 4.34's ``Dial`` hands it a ``udp:`` destination; what
  it delivers counts, whatever source it names.

Packets wait in a :class:`~vtwist.tunnel.packets.PacketQueue` until the path is open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from vtwist.address import Destination, normalize_host, parse_ip
from vtwist.tunnel.packets import PacketQueue

log = Logger(namespace="vtwist.proxy")


class _Socket(DatagramProtocol):
    def __init__(self, path: ServerDatagrams) -> None:
        self.path = path

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.path._datagram(data, addr)


class ServerDatagrams:
    """The UDP path to one server. ``received(packet)`` gets the server's packets;
    ``ended(why)`` is called once when the path fails or the proxy's session ends (not after
    :meth:`close`)."""

    def __init__(self, reactor: Any, via: Any, received: Callable[[bytes], None],
                 ended: Callable[[str], None], name: str) -> None:
        self.reactor = reactor
        self.via = via
        self.received = received
        self.ended = ended
        #: the protocol's name, for log lines
        self.name = name
        self.closed = False
        self.queue: PacketQueue | None = PacketQueue()
        #: the server's (address, port) once known
        self.address: tuple[str, int] | None = None
        self.port: Any = None
        #: the proxy outbound's IPacketSession (proxySettings), else None
        self.upstream: Any = None

    def open(self, host: str, port: int) -> None:
        """Start the path to ``host:port``."""
        if self.via is not None:
            upstream = self.via.packetSession(self._upstreamPacket, self._upstreamClosed)
            if self.closed:
                upstream.close()
                return
            self.upstream = upstream
            self._ready((normalize_host(host), port))
        elif parse_ip(host) is not None:
            self._listen(host, port)
        else:
            d = self.reactor.resolve(host)
            d.addCallbacks(lambda ip: self._listen(ip, port),
                           lambda f: self._end(f"cannot resolve {host}: {f.getErrorMessage()}"))

    def _listen(self, ip: str, port: int) -> None:
        if self.closed:
            return
        ip = normalize_host(ip)
        try:
            self.port = self.reactor.listenUDP(0, _Socket(self),
                                               interface="::" if ":" in ip else "0.0.0.0",
                                               maxPacketSize=65535)
        except Exception as e:  # noqa: BLE001 - CannotListenError and OSError alike
            self._end(f"cannot open a UDP socket: {e}")
            return
        self._ready((ip, port))

    def _ready(self, address: tuple[str, int]) -> None:
        self.address = address
        queue, self.queue = self.queue, None
        for packet in queue.take() if queue is not None else ():
            self._write(packet)

    def send(self, packet: bytes) -> None:
        """Send ``packet`` to the server (kept, up to a limit, until the path is open)."""
        if self.closed:
            return
        if self.address is None:
            self.queue.push(packet)  # type: ignore[union-attr]
        else:
            self._write(packet)

    def _write(self, packet: bytes) -> None:
        if self.upstream is not None:
            self.upstream.send(packet, Destination.udp(*self.address))  # type: ignore[misc]
            return
        try:
            self.port.write(packet, self.address)
        except OSError as e:
            log.info("{name} UDP to {host}:{port}: {e}", name=self.name,
                     host=self.address[0], port=self.address[1], e=e)  # type: ignore[index]

    def _datagram(self, data: bytes, addr: Any) -> None:
        if not self.closed and (normalize_host(addr[0]), addr[1]) == self.address:
            self.received(data)

    def _upstreamPacket(self, data: bytes, source: Destination) -> None:
        if not self.closed:
            self.received(data)

    def _upstreamClosed(self) -> None:
        self.upstream = None
        self._end("the proxy outbound's UDP session ended")

    def _end(self, why: str) -> None:
        if not self.closed:
            self.close()
            self.ended(why)

    def close(self) -> None:
        """Close the socket (or the proxy outbound's session); drop what waits."""
        self.closed = True
        self.queue = None
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()
        if self.upstream is not None:
            upstream, self.upstream = self.upstream, None
            upstream.close()
