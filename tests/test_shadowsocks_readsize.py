"""The relay's other side of a Shadowsocks stream reads 4 whole chunks (65532 bytes) at a
time: the server's freedom connection and the client's SOCKS connection, so a full read is
sealed in 4 chunks of 0x3FFF instead of 4 plus one of 4 bytes. The data is unchanged."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.internet.tcp import Connection
from twisted.trial.unittest import TestCase

from tests.interop.vmess_harness import socks_echo
from tests.netutil import free_port
from tests.services import start_service
from vtwist.proxy.shadowsocks import transport as ss_transport
from vtwist.proxy.shadowsocks.aead import MAX_PAYLOAD
from vtwist.testing.doubles import Echo
from vtwist.transport.internals import read_whole_units


class _Layer:
    def __init__(self, lower: Any) -> None:
        self.lowerTransport = lower


class ReadSizeTests(TestCase):
    timeout = 60

    def test_walks_to_the_socket(self) -> None:
        class Sock(Connection):
            def __init__(self) -> None:  # no socket needed
                pass

        sock = Sock()
        read_whole_units(_Layer(_Layer(sock)), MAX_PAYLOAD)
        self.assertEqual(sock.bufferSize, 4 * MAX_PAYLOAD)
        read_whole_units(object(), MAX_PAYLOAD)  # nothing to set: no error

    async def test_relayed_sockets_read_whole_chunks(self) -> None:
        seen: list[Any] = []
        original = ss_transport.read_whole_units

        def record(producer: Any, unit: int) -> None:
            original(producer, unit)
            seen.append(producer)

        self.patch(ss_transport, "read_whole_units", record)
        echo = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        ss, socks = free_port(), free_port()
        account = {"method": "aes-128-gcm", "password": "read-size"}
        await start_service({
            "inbounds": [{"port": ss, "listen": "127.0.0.1", "protocol": "shadowsocks",
                          "settings": account}],
            "outbounds": [{"protocol": "freedom"}]}, self)
        await start_service({
            "inbounds": [{"port": socks, "listen": "127.0.0.1", "protocol": "socks",
                          "settings": {"auth": "noauth"}}],
            "outbounds": [{"protocol": "shadowsocks", "settings": {"servers": [
                dict(account, address="127.0.0.1", port=ss)]}}]}, self)
        sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1",
                                        echo.getHost().port, 4 << 20)
        self.assertEqual(got, sent)
        sockets = []
        for producer in seen:
            while not isinstance(producer, Connection):
                producer = getattr(producer, "lowerTransport", None) or producer.transport
            sockets.append(producer)
        self.assertEqual(len(sockets), 2)  # the client's SOCKS side, the server's freedom
        self.assertEqual({s.bufferSize for s in sockets}, {4 * MAX_PAYLOAD})
        self.assertEqual({s.getPeer().port for s in sockets} & {echo.getHost().port},
                         {echo.getHost().port})
