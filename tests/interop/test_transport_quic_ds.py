"""VMess (aes-128-gcm) over QUIC and over domain sockets: vtwist and V2Ray 4.34 in every
pairing.

Each pairing runs ``SOCKS inbound -> VMess outbound ═ transport ═ VMess inbound -> freedom ->
echo`` with the same V2Ray-format configs for vtwist and V2Ray: 20 MB each way with sha256,
a UDP echo through the SOCKS inbound's UDP ASSOCIATE, and (one pairing per transport
flavour) 8 streams at once. QUIC flavours: V2Ray's internal TLS, tlsSettings with a real
certificate, and the packet obfuscation (aes-128-gcm + srtp, chacha20-poly1305 +
wechat-video). Domain sockets: a file path, and an abstract padded name under TLS.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task

from tests.interop.transport_support import (
    PAIRINGS,
    PairingTestCase,
    TransportTestCase,
    add_pairing_tests,
    vmess_server_config,
    vmess_socks_client_config,
)
from tests.netutil import free_port, wait_until
from tests.services import start_service
from vtwist.transport.quic.endpoints import POOL

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"
SECURITY = "aes-128-gcm"
SIZE = 20 * 1024 * 1024

QUIC_FLAVOURS: dict[str, dict[str, Any] | None] = {
    "quic": {},
    # No quicSettings at all: 4.34 then seals packets with AES-128-GCM and an empty key.
    "quic_no_settings": None,
    "quic_tls": {},
    "quic_aes_srtp": {"security": "aes-128-gcm", "key": "vtwist quic key",
                      "header": {"type": "srtp"}},
    "quic_chacha_wechat": {"security": "chacha20-poly1305", "key": "k",
                           "header": {"type": "wechat-video"}},
}
DS_FLAVOURS = ("ds", "ds_abstract_tls")


def server_config(port: int, stream: dict[str, Any]) -> dict[str, Any]:
    """VMess inbound -> freedom."""
    return vmess_server_config(port, UUID, stream)


class QuicDomainSocketInterop(PairingTestCase):
    """The pairings over each QUIC and domain-socket flavour."""

    timeout = 240

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(POOL.close_all)
        self.abstract = f"vtwist-ds-{os.getpid()}-{id(self)}"

    def stream(self, flavour: str, inbound: bool) -> dict[str, Any]:
        """streamSettings for a flavour."""
        if flavour in QUIC_FLAVOURS:
            out: dict[str, Any] = {"network": "quic"}
            if QUIC_FLAVOURS[flavour] is not None:
                out["quicSettings"] = QUIC_FLAVOURS[flavour]
            if flavour == "quic_tls":
                out["security"] = "tls"
                out["tlsSettings"] = self.fx.tls_server() if inbound else self.fx.tls_client()
            return out
        if flavour == "ds":
            return {"network": "domainsocket",
                    "dsSettings": {"path": os.path.join(self.fx.dir, "vmess.sock")}}
        return {"network": "ds", "security": "tls",
                "tlsSettings": self.fx.tls_server() if inbound else self.fx.tls_client(),
                "dsSettings": {"path": self.abstract, "abstract": True, "padding": True}}

    async def start_server(self, who: str, flavour: str) -> int:
        port = free_port(udp_too=True)
        config = server_config(port, self.stream(flavour, True))
        if who == "vtwist":
            await start_service(config, self)
            return port
        proc = self.v2ray(config)
        if flavour in QUIC_FLAVOURS:
            await proc.wait_started()
        elif flavour == "ds":
            path = config["inbounds"][0]["streamSettings"]["dsSettings"]["path"]
            await wait_until(lambda: os.path.exists(path), lambda: "no socket", 10,
                             proc.check_alive)
        else:
            await proc.wait_started()
        return port

    async def run_pair(self, flavour: str, client: str, server: str,
                       streams: int = 0) -> None:
        server_port = await self.start_server(server, flavour)
        socks = free_port(udp_too=True)
        await self.start(client, vmess_socks_client_config(
            socks, server_port, UUID, SECURITY, self.stream(flavour, False)), socks)
        await self.check_socks(socks, SIZE, (1, 100, 1024, 1400), streams, timeout=180)
        await task.deferLater(reactor, 0.5, lambda: None)


for _flavour in (*QUIC_FLAVOURS, *DS_FLAVOURS):
    _streams = 8 if _flavour in ("quic", "quic_aes_srtp", "ds") else 0
    add_pairing_tests(QuicDomainSocketInterop, _flavour, PAIRINGS,
                      "VMess over {kind}: {client} client, {server} server, 20 MB each way, "
                      f"UDP echo{f', {_streams} parallel streams' if _streams else ''}.",
                      streams=_streams)


class QuicVersions(TransportTestCase):
    """Which QUIC versions V2Ray 4.34 (quic-go 0.29) and aioquic have in common."""

    timeout = 60

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(POOL.close_all)

    async def v2ray_quic_server(self) -> int:
        port = free_port(udp_too=True)
        proc = self.v2ray(server_config(port, {"network": "quic", "quicSettings": {}}))
        await proc.wait_started()
        return port

    async def test_version_1_negotiated(self) -> None:
        """vtwist's client and V2Ray's server speak QUIC version 1 (RFC 9000)."""
        from twisted.internet.protocol import Factory

        from vtwist.testing.doubles import Recorder
        from vtwist.transport.quic.endpoints import QUICClientEndpoint

        port = await self.v2ray_quic_server()
        proto = await QUICClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(Recorder))
        session = proto.transport.session
        self.assertEqual(session.quic._version, 1)
        proto.transport.abortConnection()

    async def test_version_negotiation(self) -> None:
        """Offered only aioquic's other version (QUIC v2, RFC 9369: 0x6b3343cf), V2Ray
        answers with a Version Negotiation packet listing v1, quic-go 0.29's draft v2
        (0x709a50c4) and draft-29 (0xff00001d): v1 is the only version both have."""
        from aioquic.buffer import Buffer
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection
        from aioquic.quic.packet import QuicPacketType, QuicProtocolVersion, pull_quic_header
        from twisted.internet.protocol import DatagramProtocol

        port = await self.v2ray_quic_server()
        config = QuicConfiguration(is_client=True, alpn_protocols=["h2"],
                                   server_name="quic.internal.v2ray.com",
                                   supported_versions=[QuicProtocolVersion.VERSION_2])
        quic = QuicConnection(configuration=config)
        quic.connect(("127.0.0.1", port), now=reactor.seconds())
        initial = [data for data, _ in quic.datagrams_to_send(now=reactor.seconds())]
        answer: defer.Deferred = defer.Deferred()

        class Probe(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: Any) -> None:
                if not answer.called:
                    answer.callback(data)

        udp = reactor.listenUDP(0, Probe(), interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        reply = None
        for _ in range(10):  # resend until V2Ray, still starting, answers
            for data in initial:
                udp.write(data, ("127.0.0.1", port))
            try:
                reply = await answer.addTimeout(1, reactor)
                break
            except defer.TimeoutError:
                answer = defer.Deferred()
        self.assertIsNotNone(reply)
        header = pull_quic_header(Buffer(data=reply), host_cid_length=8)
        self.assertEqual(header.packet_type, QuicPacketType.VERSION_NEGOTIATION)
        offered = [v for v in header.supported_versions if (v & 0x0F0F0F0F) != 0x0A0A0A0A]
        self.assertEqual(sorted(offered), sorted([0x1, 0x709A50C4, 0xFF00001D]))
        self.assertNotIn(QuicProtocolVersion.VERSION_2, header.supported_versions)
