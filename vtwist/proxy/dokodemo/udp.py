"""dokodemo-door's UDP side: one flow per client source address, each its own packet tunnel.

A flow sends every datagram of its client to the inbound's fixed destination (with TPROXY
and ``followRedirect``: to the datagram's original destination, one flow per client and
original destination, as V2Ray keys them). Replies, from whichever address they come, go back
to the client from the listening socket (TPROXY: from a transparent socket bound to the
original destination). A flow with no datagram either way for ``idle_timeout`` closes; at most
``max_flows`` are open, the least recently used one is closed beyond that.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from vtwist.address import Destination, normalize_host
from vtwist.proxy.dokodemo.redirect import reply_socket
from vtwist.tunnel.packets import PacketTunnel
from vtwist.tunnel.service import TunnelService

log = Logger(namespace="vtwist.dokodemo")

#: Open flows per listening port; the least recently used one is closed beyond it.
MAX_FLOWS = 1024
MAX_DATAGRAM = 65535

FlowKey = tuple[tuple[str, int], Destination | None]


def format_source(addr: tuple[str, int]) -> str:
    """``ip:port`` (IPv6 in brackets) of a datagram's source."""
    host = normalize_host(addr[0])
    return f"[{host}]:{addr[1]}" if ":" in host else f"{host}:{addr[1]}"


class _ClientSide(DatagramProtocol):
    """Reads a TPROXY reply socket: what the client sends to it belongs to its flow."""

    def __init__(self, flow: _Flow) -> None:
        self.flow = flow

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """The client sent to the reply socket's address: the flow's next datagram."""
        if tuple(addr[:2]) == self.flow.client and self.flow.packets is not None:
            self.flow.packets.send(data, self.flow.destination)


class _Flow:
    """One client's packet tunnel."""

    __slots__ = ("client", "destination", "packets", "reply_port")

    def __init__(self, client: tuple[str, int], destination: Destination) -> None:
        self.client = client
        self.destination = destination
        self.packets: PacketTunnel | None = None
        self.reply_port: Any = None  # TPROXY: the port replies leave from

    def close(self) -> None:
        """Close the tunnel and the reply socket."""
        if self.packets is not None:
            self.packets.close()
        self.release()

    def release(self) -> None:
        """Close the reply socket (the tunnel ended or is closing)."""
        if self.reply_port is not None:
            port, self.reply_port = self.reply_port, None
            port.stopListening()


class DokodemoDatagrams(DatagramProtocol):
    """The UDP listener of one dokodemo-door port."""

    def __init__(self, reactor: Any, tunnels: TunnelService, destination: Destination | None,
                 *, inbound_tag: str = "", idle_timeout: float = 300.0,
                 follow_original: bool = False, mark: int = 0,
                 max_flows: int = MAX_FLOWS) -> None:
        self.reactor = reactor
        self.tunnels = tunnels
        self.destination = destination
        self.inbound_tag = inbound_tag
        self.idle_timeout = idle_timeout
        self.follow_original = follow_original
        self.mark = mark
        self.max_flows = max_flows
        self.flows: OrderedDict[FlowKey, _Flow] = OrderedDict()
        self.dropped = 0

    # -- from clients ------------------------------------------------------------------
    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """A datagram on an ordinary UDP port."""
        self.datagramReceivedTo(data, addr, None)

    def datagramReceivedTo(self, data: bytes, addr: Any,
                           original: tuple[str, int] | None) -> None:
        """A datagram from ``addr``; ``original`` is where it was going (TPROXY)."""
        client = (addr[0], addr[1])
        destination = self.destination
        overridden = False
        if self.follow_original and original is not None:
            try:
                destination = Destination.udp(original[0], original[1])
                overridden = True
            except ValueError:
                pass
        if destination is None:
            self.dropped += 1
            log.debug("UDP from {source} dropped: unable to get destination",
                      source=format_source(client))
            return
        key: FlowKey = (client, destination if overridden else None)
        flow = self.flows.get(key)
        if flow is None:
            flow = self._open(key, client, destination, original if overridden else None)
            if flow is None:
                return
        else:
            self.flows.move_to_end(key)
        flow.packets.send(data, destination)  # type: ignore[union-attr]

    def _open(self, key: FlowKey, client: tuple[str, int], destination: Destination,
              original: tuple[str, int] | None) -> _Flow | None:
        while len(self.flows) >= self.max_flows:
            _, oldest = self.flows.popitem(last=False)
            oldest.close()
        flow = _Flow(client, destination)
        if original is not None:
            try:
                sock = reply_socket(original, self.mark)
            except OSError as e:
                self.dropped += 1
                log.info("UDP from {source} to {dest}: no transparent reply socket: {e}",
                         source=format_source(client), dest=destination, e=e)
                return None
            try:
                flow.reply_port = self.reactor.adoptDatagramPort(
                    sock.fileno(), sock.family, _ClientSide(flow), MAX_DATAGRAM)
            finally:
                sock.close()

        def onPacket(data: bytes, source: Destination) -> None:
            self._reply(flow, data)

        def onClose() -> None:
            flow.release()
            if self.flows.get(key) is flow:
                log.debug("UDP flow {source} -> {dest} ended",
                          source=format_source(client), dest=destination)
                del self.flows[key]

        try:
            flow.packets = self.tunnels.openPackets(
                destination, onPacket, onClose, inbound_tag=self.inbound_tag,
                source=format_source(client), idle_timeout=self.idle_timeout)
        except Exception as e:  # noqa: BLE001 - no outbound: drop, say why
            flow.release()
            log.info("UDP to {dest} from {source}: {why}", dest=destination,
                     source=format_source(client), why=e)
            return None
        if not flow.packets.closed:
            self.flows[key] = flow
        return flow

    # -- towards clients ---------------------------------------------------------------
    def _reply(self, flow: _Flow, data: bytes) -> None:
        port = flow.reply_port if flow.reply_port is not None else self.transport
        if port is None:
            return
        try:
            port.write(data, flow.client)
        except OSError as e:
            log.debug("UDP to client {addr} failed: {e}", addr=flow.client, e=e)

    # -- ending ------------------------------------------------------------------------
    def stopProtocol(self) -> None:
        """The port stopped listening: close every flow."""
        self.closeAll()

    def closeAll(self) -> None:
        """Close every flow."""
        flows = list(self.flows.values())
        self.flows.clear()
        for flow in flows:
            flow.close()
