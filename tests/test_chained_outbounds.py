"""Outbounds with proxySettings send datagrams through the proxy outbound's packet
session (V2Ray 4.34's ``Dial`` with a ``udp:`` destination), never from a socket of their
own: Shadowsocks (to the server's UDP port) and freedom (streams too, after redirect and
domainStrategy). The proxy outbound here is a recorder; the wire checks are in
tests/interop/test_proxy_settings.py."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectError
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from vtwist.address import Destination
from vtwist.proxy.shadowsocks.aead import Account
from vtwist.proxy.shadowsocks.codec import decode_packet, encode_packet
from vtwist.proxy.shadowsocks.outbound import ShadowsocksOutbound
from vtwist.proxy.shadowsocks.settings import ShadowsocksOutboundSettings, ShadowsocksServer
from vtwist.tunnel.dialer import chained_dialer, direct_dialer, packet_path

ACCOUNT = Account.from_password("chacha20-poly1305", "secret")


class _Session:
    def __init__(self, onPacket: Any, onClose: Any) -> None:
        self.onPacket, self.onClose = onPacket, onClose
        self.sent: list[tuple[bytes, Destination]] = []
        self.closed = 0

    def send(self, data: bytes, destination: Destination) -> None:
        self.sent.append((data, destination))

    def close(self) -> None:
        self.closed += 1


class _Upstream:
    """An IOutbound that records its packet sessions."""

    tag = "up"

    def __init__(self) -> None:
        self.sessions: list[_Session] = []

    def endpointFor(self, destination: Destination) -> Any:
        raise AssertionError("no stream expected")

    def packetSession(self, onPacket: Any, onClose: Any) -> _Session:
        session = _Session(onPacket, onClose)
        self.sessions.append(session)
        return session


class _NoUDP(Clock):
    def listenUDP(self, *a: Any, **kw: Any) -> Any:
        raise AssertionError("a chained Shadowsocks outbound opened its own UDP socket")


def _outbound(up: _Upstream, address: str = "ss.example") -> ShadowsocksOutbound:
    reactor = _NoUDP()
    settings = ShadowsocksOutboundSettings([ShadowsocksServer(address, 8388, ACCOUNT)])
    return ShadowsocksOutbound(reactor, "ss", settings, None,
                               chained_dialer(reactor, up, None))


class ChainedPacketSessionTests(TestCase):
    def test_packet_path(self) -> None:
        up = _Upstream()
        self.assertIs(packet_path(chained_dialer(Clock(), up, None)), up)
        self.assertIsNone(packet_path(direct_dialer(Clock(), None)))

    def test_packets_ride_the_proxy_session_both_ways(self) -> None:
        up = _Upstream()
        got: list[tuple[bytes, Destination]] = []
        session = _outbound(up).packetSession(lambda d, s: got.append((d, s)),
                                              lambda: None)
        target = Destination.udp("1.2.3.4", 53)
        session.send(b"query", target)
        session.send(b"again", Destination.udp("example.com", 5353))
        [proxy] = up.sessions
        self.assertEqual([d for _, d in proxy.sent],
                         [Destination.udp("ss.example", 8388)] * 2)
        first = decode_packet(ACCOUNT, proxy.sent[0][0])
        self.assertEqual((first.host, first.port, first.payload), ("1.2.3.4", 53, b"query"))
        second = decode_packet(ACCOUNT, proxy.sent[1][0])
        self.assertEqual((second.host, second.port, second.payload),
                         ("example.com", 5353, b"again"))
        # a reply (from whatever source the proxy reports), a bad packet, a reply
        proxy.onPacket(encode_packet(ACCOUNT, target, b"answer"),
                       Destination.udp("ss.example", 8388))
        proxy.onPacket(b"\x00" * 60, Destination.udp("ss.example", 8388))
        proxy.onPacket(encode_packet(ACCOUNT, target, b"more"), Destination.udp("9.9.9.9", 1))
        self.assertEqual(got, [(b"answer", target), (b"more", target)])
        self.assertEqual(session.dropped, 1)

    def test_close_closes_the_proxy_session(self) -> None:
        up = _Upstream()
        closed: list[int] = []
        session = _outbound(up).packetSession(lambda d, s: None, lambda: closed.append(1))
        session.close()
        session.send(b"late", Destination.udp("1.2.3.4", 53))
        self.assertEqual((up.sessions[0].closed, up.sessions[0].sent, closed), (1, [], []))

    def test_proxy_session_end_ends_the_session(self) -> None:
        up = _Upstream()
        closed: list[int] = []
        session = _outbound(up).packetSession(lambda d, s: None, lambda: closed.append(1))
        up.sessions[0].onClose()
        session.send(b"late", Destination.udp("1.2.3.4", 53))
        self.assertEqual((closed, up.sessions[0].sent), ([1], []))
        session.close()
        self.assertEqual(closed, [1])


class _StreamUpstream(_Upstream):
    """Records endpointFor too (a refusing endpoint: only the destination matters)."""

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[Destination] = []

    def endpointFor(self, destination: Destination) -> Any:
        from vtwist.proxy.socks.outbound import RefusingEndpoint

        self.streams.append(destination)
        return RefusingEndpoint("recorded")


class _Resolver:
    async def resolve(self, host: str, family: int) -> list[str]:
        return {"example.com": ["93.184.216.34"]}.get(host, [])


class ChainedFreedomTests(TestCase):
    """freedom with proxySettings: redirect, then the proxy (a name resolved first only
    with UseIP*), for streams and datagrams; never a socket of its own."""

    def outbound(self, strategy: str, up: _StreamUpstream) -> Any:
        from vtwist.proxy.freedom.outbound import FreedomOutbound
        from vtwist.proxy.freedom.settings import FreedomSettings

        reactor = _NoUDP()
        settings = FreedomSettings(domain_strategy=strategy, redirect=("", 8080))
        return FreedomOutbound(reactor, "direct", settings, resolver=_Resolver(),
                               dialer=chained_dialer(reactor, up, None))

    async def test_as_is_passes_names(self) -> None:
        up = _StreamUpstream()
        freedom = self.outbound("AsIs", up)
        with self.assertRaises(ConnectError):
            await freedom.endpointFor(Destination.tcp("example.com", 80)).connect(None)
        session = freedom.packetSession(lambda d, s: None, lambda: None)
        session.send(b"q", Destination.udp("example.com", 53))
        self.assertEqual(up.streams, [Destination.tcp("example.com", 8080)])
        self.assertEqual(up.sessions[0].sent, [(b"q", Destination.udp("example.com", 8080))])

    async def test_use_ip_resolves_then_goes_through(self) -> None:
        up = _StreamUpstream()
        freedom = self.outbound("UseIPv4", up)
        with self.assertRaises(ConnectError):
            await freedom.endpointFor(Destination.tcp("example.com", 80)).connect(None)
        got: list[Any] = []
        closed: list[int] = []
        session = freedom.packetSession(lambda d, s: got.append((d, s)),
                                        lambda: closed.append(1))
        session.send(b"q", Destination.udp("example.com", 53))
        self.assertEqual(up.streams, [Destination.tcp("93.184.216.34", 8080)])
        [proxy] = up.sessions
        self.assertEqual(proxy.sent, [(b"q", Destination.udp("93.184.216.34", 8080))])
        proxy.onPacket(b"a", Destination.udp("93.184.216.34", 8080))
        self.assertEqual(got, [(b"a", Destination.udp("93.184.216.34", 8080))])
        proxy.onClose()
        self.assertEqual(closed, [1])
        session.close()
        self.assertEqual((closed, proxy.closed), ([1], 0))
