"""dokodemo-door in memory: settings as V2Ray 4.34 reads them, streamSettings.sockopt, the
TCP protocol's destination (fixed, REDIRECT, TPROXY), UDP flows per source (idle, LRU cap,
no outbound), the socket-address parsing of the redirect module, and the service hooks."""

from __future__ import annotations

import socket
import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.helpers import ConfigErrorMixin
from vtwist.address import Destination
from vtwist.config.loader import parse_config
from vtwist.policy import LevelPolicy
from vtwist.proxy.dokodemo import redirect
from vtwist.proxy.dokodemo.server import DokodemoFactory
from vtwist.proxy.dokodemo.settings import DokodemoSettings
from vtwist.proxy.dokodemo.udp import DokodemoDatagrams
from vtwist.testing.doubles import FakeUDPReactor, HalfCloseTransport
from vtwist.testing.tunnels import RecordingTunnels
from vtwist.tunnel.inbound import BuildContext


def door(settings: Any = None, stream: dict | None = None, **inbound: Any) -> dict:
    """A whole config with one dokodemo-door inbound."""
    entry = {"protocol": "dokodemo-door", "port": 1234, "settings": settings, **inbound}
    if stream is not None:
        entry["streamSettings"] = stream
    return {"inbounds": [entry], "outbounds": [{"protocol": "freedom"}]}


def load(settings: Any = None, stream: dict | None = None, **inbound: Any) -> Any:
    config = parse_config(door(settings, stream, **inbound))
    return config, config.inbounds[0]


class SettingsTests(ConfigErrorMixin, TestCase):
    def configFor(self, data: Any) -> Any:
        return door(data)

    def test_full(self) -> None:
        config, inbound = load({"address": "8.8.8.8", "port": 53, "network": "tcp,udp",
                                "timeout": 30, "userLevel": 1, "followRedirect": True})
        self.assertEqual(inbound.settings, DokodemoSettings(
            address="8.8.8.8", port=53, networks=("tcp", "udp"), timeout=30, user_level=1,
            follow_redirect=True))
        self.assertIn("timeout is deprecated", " ".join(config.warnings))

    def test_defaults_tcp_only(self) -> None:
        _, inbound = load({"address": "example.com", "port": 80})
        self.assertEqual(inbound.settings.networks, ("tcp",))
        self.assertFalse(inbound.settings.follow_redirect)

    def test_network_forms(self) -> None:
        for value, expected in [("udp", ("udp",)), (["udp", "tcp"], ("tcp", "udp")),
                                ("TCP, udp", ("tcp", "udp")), ("tcp,tcp", ("tcp",))]:
            _, inbound = load({"address": "1.1.1.1", "port": 1, "network": value})
            self.assertEqual(inbound.settings.networks, expected, value)

    def test_unknown_network_warns(self) -> None:
        config, inbound = load({"address": "1.1.1.1", "port": 1, "network": "tcp,sctp"})
        self.assertEqual(inbound.settings.networks, ("tcp",))
        self.assertIn("unknown network 'sctp' ignored", " ".join(config.warnings))

    def test_bad_input(self) -> None:
        self.assertConfigError({"address": "1.1.1.1", "network": []},
                               "inbounds[0].settings.network: no network specified "
                               "(expected tcp, udp or tcp,udp)")
        self.assertConfigError({"address": "1.1.1.1", "network": "unix"},
                               "inbounds[0].settings.network: network 'unix' is not "
                               "supported by vtwist")
        self.assertConfigError({"address": "bad host!"},
                               "inbounds[0].settings.address: expected an IP address or a "
                               "domain, got 'bad host!'")
        self.assertConfigError({"address": "1.1.1.1", "port": 70000},
                               "inbounds[0].settings.port: expected an integer 0-65535, "
                               "got 70000")

    def test_no_address_is_accepted_with_a_warning(self) -> None:
        """V2Ray 4.34 accepts it (each connection then fails: unable to get destination)."""
        config, inbound = load({})
        self.assertIsNone(inbound.settings.address)
        self.assertIn("without address", " ".join(config.warnings))

    def test_protocol_listed(self) -> None:
        from vtwist.config.registry import inbound_spec

        self.assertEqual(inbound_spec("dokodemo-door").name, "dokodemo-door")


class SockoptTests(TestCase):
    def test_default(self) -> None:
        _, inbound = load({"address": "1.1.1.1"})
        self.assertEqual(inbound.stream.sockopt.tproxy, "off")
        self.assertEqual(inbound.stream.sockopt.mark, 0)

    def test_tproxy_and_mark(self) -> None:
        config, inbound = load({"address": "1.1.1.1"}, {"sockopt": {
            "tproxy": "TProxy", "mark": 255, "tcpFastOpen": True}})
        self.assertEqual((inbound.stream.sockopt.tproxy, inbound.stream.sockopt.mark),
                         ("tproxy", 255))
        self.assertEqual(config.warnings, [])

    def test_unknown_mode_is_off(self) -> None:
        config, inbound = load({"address": "1.1.1.1"}, {"sockopt": {"tproxy": "magic"}})
        self.assertEqual(inbound.stream.sockopt.tproxy, "off")
        self.assertIn("tproxy", " ".join(config.warnings))


def factory_for(settings: dict, stream: dict | None = None,
                policy: Any = None) -> tuple[DokodemoFactory, RecordingTunnels]:
    config, inbound = load(settings, stream)
    clock = FakeUDPReactor()
    tunnels = RecordingTunnels(clock)
    ctx = BuildContext(reactor=clock, tunnels=tunnels, policy=policy or config.policy)
    from vtwist.proxy.dokodemo.settings import build_inbound_factory

    return build_inbound_factory(inbound, ctx), tunnels


class TCPTests(TestCase):
    def connect(self, factory: DokodemoFactory, local: tuple[str, int] = ("127.0.0.1", 1234)
                ) -> tuple[Any, HalfCloseTransport]:
        protocol = factory.buildProtocol(None)
        transport = HalfCloseTransport(host=local, peer=("10.1.1.1", 5555))
        protocol.makeConnection(transport)
        return protocol, transport

    def test_fixed_destination_at_connection_made(self) -> None:
        factory, tunnels = factory_for({"address": "example.com", "port": 443})
        protocol, transport = self.connect(factory)
        [(destination, kw, _)] = tunnels.connects
        self.assertEqual(destination, Destination.tcp("example.com", 443))
        self.assertEqual(kw["source"], "10.1.1.1:5555")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"early")
        self.assertEqual(protocol.tunnel.held.chunks, [b"early"])
        self.assertEqual(transport.producerState, "paused")  # held: paused until relayed

    def test_connect_failure_closes(self) -> None:
        factory, tunnels = factory_for({"address": "1.2.3.4", "port": 80})
        _, transport = self.connect(factory)
        tunnels.connects[0][2].errback(ConnectionRefusedError())
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_no_destination_rejects(self) -> None:
        factory, tunnels = factory_for({})
        _, transport = self.connect(factory)
        self.assertEqual(tunnels.connects, [])
        self.assertTrue(transport.disconnecting)

    def test_timeout_overrides_conn_idle_at_level_0(self) -> None:
        factory, _ = factory_for({"address": "1.2.3.4", "timeout": 7})
        self.assertEqual(factory.policy.conn_idle, 7.0)
        factory, _ = factory_for({"address": "1.2.3.4", "timeout": 7, "userLevel": 1})
        self.assertEqual(factory.policy, LevelPolicy())

    def test_tproxy_destination_is_local_address(self) -> None:
        factory, tunnels = factory_for({"address": "1.2.3.4", "port": 80,
                                        "followRedirect": True},
                                       {"sockopt": {"tproxy": "tproxy"}})
        self.connect(factory, local=("93.184.216.34", 8443))
        self.assertEqual(tunnels.connects[0][0], Destination.tcp("93.184.216.34", 8443))

    def test_redirect_without_original_falls_back(self) -> None:
        """followRedirect alone means REDIRECT (as V2Ray); no socket, no NAT entry: the
        configured address."""
        factory, tunnels = factory_for({"address": "1.2.3.4", "port": 80,
                                        "followRedirect": True})
        self.assertEqual(factory.tproxy, "redirect")
        self.connect(factory)
        self.assertEqual(tunnels.connects[0][0], Destination.tcp("1.2.3.4", 80))

    def test_without_follow_redirect_tproxy_is_ignored_for_destination(self) -> None:
        factory, tunnels = factory_for({"address": "1.2.3.4", "port": 80},
                                       {"sockopt": {"tproxy": "tproxy"}})
        self.connect(factory, local=("5.6.7.8", 99))
        self.assertEqual(tunnels.connects[0][0], Destination.tcp("1.2.3.4", 80))

    def test_service_hooks(self) -> None:
        factory, _ = factory_for({"address": "1.2.3.4", "network": "udp"})
        self.assertIsNone(factory.streamEndpoint(Clock(), "127.0.0.1", 1, None))
        self.assertTrue(factory.listensDatagrams)
        factory, _ = factory_for({"address": "1.2.3.4"})
        self.assertIsNotNone(factory.streamEndpoint(Clock(), "127.0.0.1", 1, None))
        self.assertFalse(factory.listensDatagrams)
        factory, _ = factory_for({"address": "1.2.3.4"}, {"sockopt": {"tproxy": "tproxy"}})
        self.assertIsInstance(factory.streamEndpoint(Clock(), "127.0.0.1", 1, None),
                              redirect.TransparentTCPServerEndpoint)


class UDPTests(TestCase):
    def setUp(self) -> None:
        self.clock = FakeUDPReactor()
        self.tunnels = RecordingTunnels(self.clock)
        self.target = Destination.udp("10.0.0.53", 53)

    def listen(self, **kw: Any) -> tuple[DokodemoDatagrams, Any]:
        protocol = DokodemoDatagrams(self.clock, self.tunnels, self.target, **kw)
        port = self.clock.listenUDP(0, protocol)
        return protocol, port

    def test_flow_per_source(self) -> None:
        protocol, port = self.listen()
        protocol.datagramReceived(b"a1", ("127.0.0.1", 1000))
        protocol.datagramReceived(b"a2", ("127.0.0.1", 1000))
        protocol.datagramReceived(b"b1", ("127.0.0.1", 2000))
        a, b = self.tunnels.sessions
        self.assertEqual(a.sent, [(b"a1", self.target), (b"a2", self.target)])
        self.assertEqual(b.sent, [(b"b1", self.target)])
        a.onPacket(b"reply", Destination.udp("10.0.0.53", 53))
        b.onPacket(b"other", Destination.udp("10.0.0.54", 53))  # any source goes back
        self.assertEqual(port.written, [(b"reply", ("127.0.0.1", 1000)),
                                        (b"other", ("127.0.0.1", 2000))])

    def test_idle_flow_closes_and_reopens(self) -> None:
        protocol, _ = self.listen(idle_timeout=10)
        protocol.datagramReceived(b"x", ("127.0.0.1", 1000))
        for _ in range(21):
            self.clock.advance(1)
        self.assertEqual(protocol.flows, {})
        self.assertTrue(self.tunnels.sessions[0].closed)
        protocol.datagramReceived(b"y", ("127.0.0.1", 1000))
        self.assertEqual(len(self.tunnels.sessions), 2)

    def test_lru_cap(self) -> None:
        protocol, _ = self.listen(max_flows=2)
        for port in (1, 2):
            protocol.datagramReceived(b"x", ("127.0.0.1", port))
        protocol.datagramReceived(b"x", ("127.0.0.1", 1))  # 1 is now the most recent
        protocol.datagramReceived(b"x", ("127.0.0.1", 3))
        self.assertEqual([client[1] for client, _ in protocol.flows], [1, 3])
        self.assertTrue(self.tunnels.sessions[1].closed)

    def test_no_destination_drops(self) -> None:
        protocol = DokodemoDatagrams(self.clock, self.tunnels, None)
        self.clock.listenUDP(0, protocol)
        protocol.datagramReceived(b"x", ("127.0.0.1", 1))
        self.assertEqual((protocol.dropped, self.tunnels.sessions), (1, []))

    def test_original_destination_ignored_unless_following(self) -> None:
        protocol, _ = self.listen()
        protocol.datagramReceivedTo(b"x", ("127.0.0.1", 1), ("8.8.8.8", 53))
        self.assertEqual(self.tunnels.sessions[0].sent, [(b"x", self.target)])

    def test_stop_closes_flows(self) -> None:
        protocol, _ = self.listen()
        protocol.datagramReceived(b"x", ("127.0.0.1", 1))
        protocol.doStop()
        self.assertTrue(self.tunnels.sessions[0].closed)
        self.assertEqual(protocol.flows, {})


class RedirectModuleTests(TestCase):
    def test_parse_sockaddr_in(self) -> None:
        raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 8080) + \
            socket.inet_aton("93.184.216.34") + b"\0" * 8
        self.assertEqual(redirect.parse_sockaddr(raw), ("93.184.216.34", 8080))

    def test_parse_sockaddr_in6(self) -> None:
        raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", 443) + b"\0" * 4 + \
            socket.inet_pton(socket.AF_INET6, "2001:db8::1") + b"\0" * 4
        self.assertEqual(redirect.parse_sockaddr(raw), ("2001:db8::1", 443))
        mapped = raw[:8] + socket.inet_pton(socket.AF_INET6, "::ffff:1.2.3.4") + b"\0" * 4
        self.assertEqual(redirect.parse_sockaddr(mapped), ("1.2.3.4", 443))

    def test_own_addresses(self) -> None:
        """What a socket binds without IP_TRANSPARENT is this machine's (the TPROXY door's
        check for a connection made straight to it); a documentation address is not."""
        self.assertTrue(redirect.is_own_address("127.0.0.1"))
        self.assertTrue(redirect.is_own_address("::ffff:127.0.0.1"))
        self.assertFalse(redirect.is_own_address("192.0.2.1"))
        self.assertFalse(redirect.is_own_address("2001:db8::1"))

    def test_parse_garbage(self) -> None:
        self.assertIsNone(redirect.parse_sockaddr(b""))
        self.assertIsNone(redirect.parse_sockaddr(b"\xff\xff" + b"\0" * 14))

    def test_ancillary(self) -> None:
        raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 53) + \
            socket.inet_aton("8.8.8.8") + b"\0" * 8
        self.assertEqual(redirect.original_from_ancillary(
            [(redirect.SOL_IP, redirect.IP_RECVORIGDSTADDR, raw)]), ("8.8.8.8", 53))
        self.assertIsNone(redirect.original_from_ancillary([(1, 2, raw)]))

    def test_no_original_destination_without_nat(self) -> None:
        """A plain loopback connection has no REDIRECT entry: None, not an exception."""
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        found = redirect.original_destination(accepted)
        # Without conntrack there is no entry; with it, the entry is the address itself.
        self.assertIn(found, (None, server.getsockname()))

    def test_socket_of(self) -> None:
        class Inner:
            def __init__(self, sock: Any) -> None:
                self.sock = sock

            def getHandle(self) -> Any:
                return self.sock

        class Outer:
            transport = Inner(socket.socket())

            def getHandle(self) -> Any:
                return object()

        outer = Outer()
        self.addCleanup(outer.transport.sock.close)
        self.assertIs(redirect.socket_of(outer), outer.transport.sock)
        self.assertIsNone(redirect.socket_of(IPv4Address("TCP", "1.2.3.4", 1)))
