"""The ``protocol`` routing field, vtwist beside the real V2Ray 4.34: the same config, the same
first bytes, the same outbound.

Two SOCKS inbounds sniff (one with ``destOverride`` http+tls, one with tls only: 4.34 runs
every sniffer whatever ``destOverride`` names, so an HTTP request is still recognised there),
and the rules send BitTorrent, TLS and HTTP to their own outbounds. Each outbound is a freedom
redirected to a local server that names the outbound in one line.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from twisted.internet import defer, threads
from twisted.internet.protocol import Protocol
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import V2Ray
from tests.netutil import free_port, named_servers
from tests.services import start_service
from vtwist.proxy.socks import codec

OUTBOUNDS = ("default", "bt", "tls-out", "http-out")
TIMEOUT = 20


def client_hello(server_name: str) -> bytes:
    """A real ClientHello (OpenSSL's), as a TLS client sends it first."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


PAYLOADS = {
    "bittorrent": b"\x13BitTorrent protocol" + bytes(8) + b"i" * 20 + b"p" * 20,
    "tls": client_hello("www.example.test"),
    "http": b"GET / HTTP/1.1\r\nHost: example.test\r\nUser-Agent: t\r\n\r\n",
    "other": b"\x00\x01\x02 not a protocol anyone sniffs, long enough to tell\r\n" * 2,
}


class Ident(Protocol):
    """Names its outbound in one line; the client closes."""

    def connectionMade(self) -> None:
        self.transport.write(self.factory.name.encode() + b"\n")  # type: ignore[attr-defined]


def which_outbound(proxy: int, payload: bytes) -> str:
    """SOCKS5 CONNECT to an address, send ``payload`` at once, read the outbound's line."""
    with socket.create_connection(("127.0.0.1", proxy), timeout=TIMEOUT) as sock:
        sock.sendall(codec.client_greeting((codec.METHOD_NO_AUTH,)))
        sock.sendall(codec.client_request(codec.CMD_CONNECT, "198.51.100.9", 6881))
        sock.sendall(payload)
        data = b""
        while b"\n" not in data[12:]:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    parsed = codec.parse_reply(data[2:])
    if not isinstance(parsed, tuple) or parsed[0] != 0:
        return f"refused ({data!r})"
    return data[2 + parsed[3]:].decode(errors="replace").strip()


class ProtocolRoutingInterop(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.ports = named_servers(self, OUTBOUNDS, Ident)
        self.inbounds = {impl: (free_port(), free_port()) for impl in ("vtwist", "v2ray")}
        yield start_service(self.config(*self.inbounds["vtwist"]), self)
        v2ray_both, v2ray_tls = self.inbounds["v2ray"]
        self.v2ray = V2Ray(self.config(v2ray_both, v2ray_tls))
        self.addCleanup(self.v2ray.stop)
        for port in (v2ray_both, v2ray_tls):
            yield defer.Deferred.fromCoroutine(self.v2ray.wait_port(port, timeout=60))

    def config(self, both: int, tls_only: int) -> dict[str, Any]:
        def inbound(tag: str, port: int, override: list[str]) -> dict[str, Any]:
            return {"tag": tag, "protocol": "socks", "listen": "127.0.0.1", "port": port,
                    "settings": {"auth": "noauth"},
                    "sniffing": {"enabled": True, "destOverride": override}}

        return {
            "log": {"loglevel": "warning"},
            "inbounds": [inbound("both", both, ["http", "tls"]),
                         inbound("tls-only", tls_only, ["tls"])],
            "outbounds": [{"tag": name, "protocol": "freedom",
                           "settings": {"redirect": f"127.0.0.1:{self.ports[name]}"}}
                          for name in OUTBOUNDS],
            "routing": {"rules": [
                {"type": "field", "protocol": ["bittorrent"], "outboundTag": "bt"},
                {"type": "field", "protocol": "tls", "outboundTag": "tls-out"},
                {"type": "field", "protocol": ["http"], "outboundTag": "http-out"}]}}

    @defer.inlineCallbacks
    def test_same_outbound_for_each_protocol(self) -> Any:
        got: dict[str, dict[tuple[str, str], str]] = {}
        for impl, ports in self.inbounds.items():
            got[impl] = {}
            for inbound, port in zip(("both", "tls-only"), ports, strict=True):
                for kind, payload in PAYLOADS.items():
                    got[impl][(inbound, kind)] = yield threads.deferToThread(
                        which_outbound, port, payload)
        expected = {("both", "bittorrent"): "bt", ("both", "tls"): "tls-out",
                    ("both", "http"): "http-out", ("both", "other"): "default",
                    ("tls-only", "bittorrent"): "bt", ("tls-only", "tls"): "tls-out",
                    ("tls-only", "http"): "http-out", ("tls-only", "other"): "default"}
        self.assertEqual(got["v2ray"], expected, "V2Ray itself")
        self.assertEqual(got["vtwist"], got["v2ray"])
