"""Trojan over tcp, tls and ws+tls: vtwist and V2Ray 4.34 in every pairing, TCP and UDP.

TCP: 20 MB each way through ``dokodemo-door -> trojan outbound ═ tls|wss ═ trojan inbound ->
freedom -> echo``, sha256 compared both ways. UDP: a SOCKS5 UDP ASSOCIATE on the client side,
the datagrams carried in Trojan's UDP framing, a UDP echo behind the server. Both sides run
from one V2Ray-format config, given to vtwist (in-process) or to V2Ray.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory

from tests.interop.transport_support import TransportTestCase
from tests.interop.vmess_harness import socks_udp_echo
from tests.netutil import free_port
from tests.services import start_service
from vtwist.testing.doubles import Echo, UDPEcho

PASSWORD = "trojan pass \u00e9 1"
SIZE = 20 * 1024 * 1024


def server_config(port: int, stream: dict[str, Any],
                  password: str = PASSWORD) -> dict[str, Any]:
    """A Trojan server: trojan inbound, freedom outbound."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"listen": "127.0.0.1", "port": port, "protocol": "trojan",
                      "settings": {"clients": [{"password": "someone else"},
                                               {"password": password,
                                                "email": "t@example.test"}]},
                      "streamSettings": stream}],
        "outbounds": [{"protocol": "freedom"}],
    }


def client_config(tcp_port: int, socks_port: int, target: int, server_port: int,
                  stream: dict[str, Any], password: str = PASSWORD) -> dict[str, Any]:
    """A Trojan client: dokodemo-door to ``target`` and SOCKS5 (with UDP) into a trojan
    outbound."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [
            {"listen": "127.0.0.1", "port": tcp_port, "protocol": "dokodemo-door",
             "settings": {"address": "127.0.0.1", "port": target, "network": "tcp"}},
            {"listen": "127.0.0.1", "port": socks_port, "protocol": "socks",
             "settings": {"auth": "noauth", "udp": True, "ip": "127.0.0.1"}},
        ],
        "outbounds": [{"protocol": "trojan", "settings": {"servers": [{
            "address": "127.0.0.1", "port": server_port, "password": password}]},
            "streamSettings": stream}],
        # Trojan has no end-of-stream of its own: over tcp and ws (and from V2Ray's client,
        # which sends no TLS close_notify for a half-close), once the client is done the
        # downlink stays open for downlinkOnly. (vtwist over TLS 1.3: test_tls_half_close.)
        "policy": {"levels": {"0": {"downlinkOnly": 1}}},
    }


class _TrackedEcho(Echo):
    def connectionMade(self) -> None:
        self.factory.live.add(self)

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.live.discard(self)


class TrojanInterop(TransportTestCase):
    """Transports x (vtwist|V2Ray client) x (vtwist|V2Ray server)."""

    timeout = 120

    async def server(self, who: str, kind: str) -> int:
        port = free_port()
        config = server_config(port, self.fx.settings(kind, inbound=True))
        if who == "vtwist":
            await start_service(config, self)
        else:
            await self.v2ray(config).wait_port(port)
        return port

    async def client(self, who: str, kind: str, server_port: int, target: int
                     ) -> tuple[int, int]:
        tcp_port, socks_port = free_port(), free_port()
        config = client_config(tcp_port, socks_port, target, server_port,
                               self.fx.settings(kind, inbound=False))
        if who == "vtwist":
            await start_service(config, self)
        else:
            proc = self.v2ray(config)
            await proc.wait_port(tcp_port)
            await proc.wait_port(socks_port)
        return tcp_port, socks_port

    async def echo_server(self) -> int:
        """An echo server whose live connections the test can wait for."""
        factory = Factory.forProtocol(_TrackedEcho)
        factory.live = set()  # type: ignore[attr-defined]
        self.echo_factory = factory
        port = await self.listen(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
                                 factory)
        return port.getHost().port  # type: ignore[no-any-return]

    async def echo_closed(self, timeout: float = 10.0) -> None:
        """Wait until the echo's connections are closed (the tunnels ended)."""
        live = self.echo_factory.live
        for _ in range(int(timeout / 0.05)):
            if not live:
                return
            await task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{len(live)} echo connection(s) still open after {timeout} s")

    async def run_tcp(self, kind: str, client: str, server: str) -> None:
        echo = await self.echo_server()
        server_port = await self.server(server, kind)
        tcp_port, _ = await self.client(client, kind, server_port, echo)
        await self.transfer(TCP4ClientEndpoint(reactor, "127.0.0.1", tcp_port), SIZE)
        await self.echo_closed()

    async def run_udp(self, kind: str, client: str, server: str) -> None:
        echo = UDPEcho()
        udp = reactor.listenUDP(0, echo, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        server_port = await self.server(server, kind)
        _, socks_port = await self.client(client, kind, server_port, 9)
        # V2Ray reads a datagram into one 2 KiB buffer: larger ones do not cross it whole.
        payloads = [b"first", bytes(range(256)) * 7, b"x" * 1400, b"last"]
        got = await socks_udp_echo(reactor, socks_port, "127.0.0.1",
                                   udp.getHost().port, payloads)
        self.assertEqual(got, payloads)
        self.assertEqual(echo.got, payloads)


def _make(kind: str, client: str, server: str, udp: bool) -> Any:
    async def test(self: TrojanInterop) -> None:
        await (self.run_udp if udp else self.run_tcp)(kind, client, server)

    what = "udp_echo" if udp else "20mb"
    test.__name__ = f"test_{kind}_{client}_client_{server}_server_{what}"
    test.__doc__ = (f"Trojan over {kind}: {client} client, {server} server, "
                    + ("a UDP echo." if udp else "20 MB each way."))
    return test


for _kind in ("tcp", "tls", "wss"):
    for _client, _server in (("vtwist", "v2ray"), ("v2ray", "vtwist"), ("vtwist", "vtwist")):
        for _udp in (False, True):
            _t = _make(_kind, _client, _server, _udp)
            setattr(TrojanInterop, _t.__name__, _t)
