"""UDP ASSOCIATE in memory: a fake UDP port on a task.Clock, a hand-driven outbound."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import Destination
from vtwist.policy import LevelPolicy
from vtwist.proxy.socks import codec
from vtwist.proxy.socks.server import Phase, SocksServerFactory
from vtwist.proxy.socks.udp import UDPAssociation
from vtwist.testing.doubles import FakeUDPReactor
from vtwist.tunnel.dispatcher import Dispatcher
from vtwist.tunnel.service import TunnelService

from .socks_helpers import FakeOutbound, HalfCloseTransport, LogCapture

CLIENT = ("127.0.0.1", 40001)


class AssociationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = FakeUDPReactor()
        self.outbound = FakeOutbound()
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)
        self.assoc = UDPAssociation(self.clock, TunnelService(Dispatcher([self.outbound]), self.clock), "127.0.0.1",
                                    inbound_tag="socks-in", source="127.0.0.1:50000",
                                    idle_timeout=60)
        self.port_number = self.assoc.listen("127.0.0.1")
        self.port = self.clock.ports[0]

    def send(self, host: str, port: int, payload: bytes, frm: tuple[str, int] = CLIENT,
             frag: int = 0) -> None:
        wire = bytearray(codec.build_datagram(host, port, payload))
        wire[2] = frag
        self.assoc.datagramReceived(bytes(wire), frm)

    def test_listens_with_large_datagrams(self) -> None:
        self.assertEqual(self.port_number, 30000)
        self.assertEqual(self.port.interface, "127.0.0.1")
        self.assertEqual(self.port.maxPacketSize, 65535)

    def test_relay_both_ways(self) -> None:
        self.send("8.8.8.8", 53, b"query")
        [session] = self.outbound.sessions
        self.assertEqual(session.sent, [(b"query", Destination.udp("8.8.8.8", 53))])
        session.onPacket(b"answer", Destination.udp("8.8.8.8", 53))
        self.assertEqual(self.port.written,
                         [(codec.build_datagram("8.8.8.8", 53, b"answer"), CLIENT)])
        accepted = [e["line"] for e in self.logs.events if e.get("log_namespace") == "vtwist.access"]
        self.assertEqual(accepted, ["from 127.0.0.1:50000 accepted udp:8.8.8.8:53 [socks-in >> out]"])

    def test_one_session_per_destination(self) -> None:
        self.send("8.8.8.8", 53, b"a")
        self.send("8.8.8.8", 53, b"b")
        self.send("example.com", 53, b"c")
        self.assertEqual(len(self.outbound.sessions), 2)
        self.assertEqual([d for d, _ in self.outbound.sessions[0].sent], [b"a", b"b"])
        # Replies name the destination the client asked for (a domain stays a domain).
        self.outbound.sessions[1].onPacket(b"r", Destination.udp("93.184.216.34", 53))
        self.assertEqual(codec.parse_datagram(self.port.written[-1][0]),
                         codec.Datagram(0, "example.com", 53, b"r"))

    def test_fragments_dropped(self) -> None:
        self.send("8.8.8.8", 53, b"frag", frag=1)
        self.assertEqual(self.outbound.sessions, [])
        self.assertEqual(self.assoc.dropped, 1)

    def test_other_source_dropped(self) -> None:
        self.send("8.8.8.8", 53, b"spoof", frm=("10.0.0.66", 40001))
        self.assertEqual(self.outbound.sessions, [])
        self.assertEqual(self.assoc.dropped, 1)

    def test_malformed_dropped(self) -> None:
        for bad in (b"", b"\x00\x00\x00", b"\x00\x00\x00\x07xxxxxx", b"\x00\x00\x00\x03\x09ab"):
            self.assoc.datagramReceived(bad, CLIENT)
        self.assertEqual(self.outbound.sessions, [])
        self.assertEqual(self.assoc.dropped, 4)
        self.assertEqual(self.logs.failures(), [])

    def test_replies_go_to_latest_client_port(self) -> None:
        self.send("8.8.8.8", 53, b"a", frm=("127.0.0.1", 1111))
        self.send("8.8.8.8", 53, b"b", frm=("127.0.0.1", 2222))
        self.outbound.sessions[0].onPacket(b"r", Destination.udp("8.8.8.8", 53))
        self.assertEqual(self.port.written[-1][1], ("127.0.0.1", 2222))

    def test_idle_session_times_out(self) -> None:
        self.send("8.8.8.8", 53, b"a")
        session = self.outbound.sessions[0]
        for _ in range(5):  # traffic keeps it open (either direction counts)
            self.clock.advance(50)
            session.onPacket(b"r", Destination.udp("8.8.8.8", 53))
        self.assertFalse(session.closed)
        self.clock.advance(60)
        self.assertFalse(session.closed)
        self.clock.advance(60)
        self.assertTrue(session.closed)
        self.assertEqual(self.assoc.sessions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The next packet opens a new session.
        self.send("8.8.8.8", 53, b"again")
        self.assertEqual(len(self.outbound.sessions), 2)

    def test_session_closing_itself(self) -> None:
        self.send("8.8.8.8", 53, b"a")
        self.outbound.sessions[0].onClose()
        self.assertEqual(self.assoc.sessions, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_session_limit(self) -> None:
        self.assoc.max_sessions = 3
        for i in range(5):
            self.send(f"10.0.0.{i}", 53, b"x")
        self.assertEqual(len(self.assoc.sessions), 3)
        self.assertEqual([s.closed for s in self.outbound.sessions],
                         [True, True, False, False, False])
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)

    def test_close(self) -> None:
        self.send("8.8.8.8", 53, b"a")
        self.send("1.1.1.1", 53, b"b")
        self.assoc.close()
        self.assertTrue(all(s.closed for s in self.outbound.sessions))
        self.assertFalse(self.port.listening)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.send("8.8.8.8", 53, b"late")
        self.outbound.sessions[0].onPacket(b"late", Destination.udp("8.8.8.8", 53))
        self.assertEqual(len(self.outbound.sessions), 2)
        self.assertEqual(self.port.written, [])

    def test_no_outbound(self) -> None:
        self.assoc.tunnels = TunnelService(Dispatcher([]), self.clock)
        self.send("8.8.8.8", 53, b"a")
        self.assertEqual(len(self.logs.lines()), 1)
        self.assertEqual(self.assoc.sessions, {})


class AssociateCommandTests(SynchronousTestCase):
    """The TCP side of UDP ASSOCIATE in the server protocol."""

    def setUp(self) -> None:
        self.clock = FakeUDPReactor()
        self.outbound = FakeOutbound()
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)

    def start(self, listen: str = "127.0.0.1", udp_address: str | None = None,
              local: str = "127.0.0.1") -> tuple[Any, HalfCloseTransport]:
        factory = SocksServerFactory(TunnelService(Dispatcher([self.outbound]), self.clock), tag="socks-in",
                                     udp=True, udp_address=udp_address, listen=listen,
                                     policy=LevelPolicy())
        protocol = factory.buildProtocol(None)
        transport = HalfCloseTransport(host=(local, 1080))
        protocol.makeConnection(transport)
        protocol.dataReceived(codec.client_greeting() + codec.client_request(3, "0.0.0.0", 0))
        return protocol, transport

    def test_reply_names_the_udp_socket(self) -> None:
        protocol, transport = self.start()
        self.assertEqual(codec.parse_reply(transport.value()[2:])[:3], (0, "127.0.0.1", 30000))
        self.assertIs(protocol.phase, Phase.UDP)
        self.assertEqual(self.clock.ports[0].interface, "127.0.0.1")
        self.assertEqual(self.clock.getDelayedCalls(), [])  # no handshake timer any more

    def test_wildcard_listen_replies_with_local_address(self) -> None:
        _, transport = self.start(listen="0.0.0.0", local="192.168.1.10")
        self.assertEqual(self.clock.ports[0].interface, "0.0.0.0")
        self.assertEqual(codec.parse_reply(transport.value()[2:])[1], "192.168.1.10")

    def test_configured_ip(self) -> None:
        _, transport = self.start(listen="0.0.0.0", udp_address="203.0.113.7")
        self.assertEqual(codec.parse_reply(transport.value()[2:])[1], "203.0.113.7")

    def test_association_ends_with_tcp(self) -> None:
        protocol, transport = self.start()
        port = self.clock.ports[0]
        port.protocol.datagramReceived(codec.build_datagram("8.8.8.8", 53, b"q"), CLIENT)
        protocol.dataReceived(b"ignored")
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(port.listening)
        self.assertTrue(self.outbound.sessions[0].closed)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_fin_on_control_connection_ends_association(self) -> None:
        protocol, transport = self.start()
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(self.clock.ports[0].listening)

    def test_cannot_listen(self) -> None:
        self.clock.fail_listen = True
        protocol, transport = self.start()
        self.assertEqual(codec.parse_reply(transport.value()[2:])[0], 0x01)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.logs.lines()), 1)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
