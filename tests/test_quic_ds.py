"""QUIC and domain-socket transports: settings, packet obfuscation, socket addresses, link
fields, endpoint strings, and the QUIC stream transport's semantics on real UDP sockets."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from twisted.internet import defer, error, reactor, task
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.internet.protocol import Factory
from twisted.trial.unittest import SynchronousTestCase, TestCase

from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.testing.doubles import Echo, HalfCloseRecorder, Recorder
from vtwist.transport import stack
from vtwist.transport.domainsocket.settings import (
    SUN_PATH_SIZE,
    describe,
    listen_address,
    socket_address,
)
from vtwist.transport.linkfields import QUIC, LinkFieldError
from vtwist.transport.quic.endpoints import (
    CLIENT_MAX_STREAMS,
    ConnectionPool,
    QUICClientEndpoint,
    QUICServerEndpoint,
)
from vtwist.transport.quic.packet import NONCE_SIZE, PacketCodec, derive_key
from vtwist.transport.quic.settings import QUICSettings, absent_security
from vtwist.transport.settings import parse_stream_settings


def stream(obj: dict[str, Any], inbound: bool = True) -> Any:
    return parse_stream_settings(Node(obj, "streamSettings"), inbound)


class QUICSettingsTests(SynchronousTestCase):
    def test_parse(self) -> None:
        s = stream({"network": "quic", "quicSettings": {
            "security": "AES-128-GCM", "key": "k", "header": {"type": "wechat-video"}}})
        self.assertEqual(s.settings, QUICSettings("aes-128-gcm", "k", "wechat-video"))
        self.assertEqual(stream({"network": "quic", "quicSettings": {}}).settings,
                         QUICSettings("none", "", "none"))

    def test_absent_settings_seal_with_aes(self) -> None:
        """V2Ray 4.34 without quicSettings: AES-128-GCM, empty key (amd64/arm64)."""
        s = stream({"network": "quic"})
        self.assertEqual(s.settings, QUICSettings(absent_security(), "", "none"))
        self.assertEqual(absent_security("x86_64"), "aes-128-gcm")
        self.assertEqual(absent_security("armv7l"), "chacha20-poly1305")
        # The top-level transport object's quicSettings count as given.
        from vtwist.transport.settings import parse_stream_settings as parse

        s = parse(Node({"network": "quic"}, "streamSettings"), True,
                  transport=Node({"quicSettings": {}}, "transport"))
        self.assertEqual(s.settings.security, "none")

    def test_errors_name_the_path(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            stream({"network": "quic", "quicSettings": {"security": "aes-256-gcm"}})
        self.assertIn("streamSettings.quicSettings.security", str(caught.exception))
        with self.assertRaises(ConfigError) as caught:
            stream({"network": "quic", "quicSettings": {"header": {"type": "pigeon"}}})
        self.assertIn("streamSettings.quicSettings.header.type", str(caught.exception))

    def test_no_tls_layer_above_quic(self) -> None:
        self.assertEqual(stack.layers(stream({"network": "quic"})), ())


class PacketCodecTests(SynchronousTestCase):
    def test_identity(self) -> None:
        codec = PacketCodec(QUICSettings())
        self.assertEqual(codec.seal(b"quic"), b"quic")
        self.assertEqual(codec.open(b"quic"), b"quic")
        self.assertEqual(codec.overhead, 0)

    def test_aes_wire_format(self) -> None:
        """header | nonce | AES-128-GCM(datagram) with SHA-256(key + salt)[:16]."""
        nonce = bytes(range(NONCE_SIZE))
        codec = PacketCodec(QUICSettings("aes-128-gcm", "secret", "utp"), lambda n: nonce)
        wire = codec.seal(b"datagram")
        key = hashlib.sha256(b"secretv2ray-quic-salt").digest()
        self.assertEqual(derive_key("secret"), key)
        self.assertEqual(wire[4:4 + NONCE_SIZE], nonce)
        self.assertEqual(wire[4 + NONCE_SIZE:], AESGCM(key[:16]).encrypt(nonce, b"datagram", None))
        self.assertEqual(wire[2:4], b"\x01\x00")  # utp
        self.assertEqual(codec.open(wire), b"datagram")
        self.assertEqual(codec.overhead, 4 + 12 + 16)

    def test_chacha(self) -> None:
        nonce = b"\x07" * NONCE_SIZE
        codec = PacketCodec(QUICSettings("chacha20-poly1305", "k", "none"), lambda n: nonce)
        wire = codec.seal(b"x")
        self.assertEqual(wire, nonce + ChaCha20Poly1305(derive_key("k")).encrypt(nonce, b"x", None))

    def test_bad_datagrams_dropped(self) -> None:
        codec = PacketCodec(QUICSettings("aes-128-gcm", "k", "srtp"))
        wire = bytearray(codec.seal(b"payload"))
        wire[-1] ^= 1
        self.assertIsNone(codec.open(bytes(wire)))
        self.assertIsNone(codec.open(b"\x00" * 4))
        self.assertIsNone(codec.open(b"\x00" * 10))
        other = PacketCodec(QUICSettings("aes-128-gcm", "other", "srtp"))
        self.assertIsNone(other.open(codec.seal(b"payload")))
        header_only = PacketCodec(QUICSettings("none", "", "dtls"))
        self.assertEqual(header_only.open(header_only.seal(b"abc")), b"abc")
        self.assertEqual(len(header_only.seal(b"abc")), 13 + 3)


class DomainSocketAddressTests(SynchronousTestCase):
    def test_addresses(self) -> None:
        self.assertEqual(socket_address("/run/v.sock", False, False), "/run/v.sock")
        self.assertEqual(socket_address("@name", False, False), "\0name")
        self.assertEqual(socket_address("name", True, False), "\0name")
        padded = socket_address("name", True, True)
        self.assertEqual(len(padded), SUN_PATH_SIZE)
        self.assertEqual(padded, "\0name" + "\0" * (SUN_PATH_SIZE - 5))
        # padding only with abstract: true, as V2Ray's GetUnixAddr
        self.assertEqual(socket_address("@name", False, True), "\0name")
        self.assertEqual(listen_address("@@name"), padded)
        self.assertEqual(listen_address("@name"), "\0name")
        self.assertEqual(listen_address("/x.sock"), "/x.sock")
        self.assertIsNone(listen_address("127.0.0.1"))
        self.assertEqual(describe(padded), "@name")

    def test_settings(self) -> None:
        s = stream({"network": "ds", "dsSettings": {"path": "v", "abstract": True,
                                                    "padding": True}})
        self.assertEqual(s.network, "domainsocket")
        self.assertEqual(len(s.settings.address), SUN_PATH_SIZE)
        with self.assertRaises(ConfigError) as caught:
            stream({"network": "domainsocket"})
        self.assertIn("streamSettings.dsSettings.path", str(caught.exception))
        with self.assertRaises(ConfigError):
            stream({"network": "ds", "dsSettings": {"path": "/" + "x" * 120}})


class QUICLinkFieldsTests(SynchronousTestCase):
    def test_fields(self) -> None:
        """v2rayN: type is the header, host the security, path the key."""
        self.assertEqual(QUIC.canonical("srtp", "AES-128-GCM", "k"), ("srtp", "aes-128-gcm", "k"))
        self.assertEqual(QUIC.canonical("none", "", "k"), ("none", "none", ""))
        self.assertEqual(QUIC.to_settings("srtp", "aes-128-gcm", "k"),
                         {"security": "aes-128-gcm", "key": "k", "header": {"type": "srtp"}})
        self.assertEqual(QUIC.from_settings({"security": "chacha20-poly1305", "key": "z",
                                             "header": {"type": "dtls"}}, "q", print),
                         ("dtls", "chacha20-poly1305", "z"))
        query = QUIC.to_query("srtp", "aes-128-gcm", "k")
        self.assertEqual(query, {"headerType": "srtp", "quicSecurity": "aes-128-gcm", "key": "k"})
        self.assertEqual(QUIC.fields_from_query(query), ("srtp", "aes-128-gcm", "k"))
        with self.assertRaises(LinkFieldError):
            QUIC.canonical("none", "rot13", "")
        with self.assertRaises(LinkFieldError):
            QUIC.header("pigeon", "type")


class QUICStreamTests(TestCase):
    """vtwist's QUIC client and server on real UDP sockets."""

    timeout = 30

    async def server(self, factory: Any, settings: QUICSettings | None = None) -> int:
        port = await QUICServerEndpoint(reactor, 0, "127.0.0.1", settings).listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def client(self, port: int, settings: QUICSettings | None = None) -> QUICClientEndpoint:
        pool = ConnectionPool()
        self.addCleanup(pool.close_all)
        return QUICClientEndpoint(reactor, "127.0.0.1", port, settings, pool=pool)

    async def until(self, check: Any) -> None:
        for _ in range(400):
            if check():
                return
            await task.deferLater(reactor, 0.01, lambda: None)
        self.fail("condition not reached")

    async def test_half_close_and_reuse(self) -> None:
        """FIN is readConnectionLost for a half-closeable protocol; streams share one
        connection until CLIENT_MAX_STREAMS are in use, then a new one is dialled."""
        servers: list[HalfCloseRecorder] = []

        def build() -> HalfCloseRecorder:
            servers.append(HalfCloseRecorder())
            return servers[-1]

        port = await self.server(Factory.forProtocol(build), QUICSettings("aes-128-gcm", "k"))
        endpoint = self.client(port, QUICSettings("aes-128-gcm", "k"))
        client = await endpoint.connect(Factory.forProtocol(HalfCloseRecorder))
        client.transport.write(b"hello")
        client.transport.loseWriteConnection()
        await self.until(lambda: servers and servers[0].readLost)
        self.assertEqual(bytes(servers[0].data), b"hello")
        servers[0].transport.write(b"world")
        servers[0].transport.loseConnection()
        await self.until(lambda: client.lost is not None)
        self.assertEqual(bytes(client.data), b"world")
        client.lost.trap(error.ConnectionDone)
        more = [await endpoint.connect(Factory.forProtocol(Recorder))
                for _ in range(CLIENT_MAX_STREAMS + 1)]
        sessions = {id(p.transport.session) for p in more}
        self.assertEqual(len(sessions), 2)
        self.assertIs(more[0].transport.session, client.transport.session)

    async def test_abort_and_server_stop(self) -> None:
        """abortConnection resets the stream (the peer loses it); a stopped server closes
        its connections (every stream is lost)."""
        servers: list[Recorder] = []

        def build() -> Recorder:
            servers.append(Recorder())
            return servers[-1]

        endpoint_port = await QUICServerEndpoint(reactor, 0, "127.0.0.1").listen(
            Factory.forProtocol(build))
        endpoint = self.client(endpoint_port.getHost().port)
        first = await endpoint.connect(Factory.forProtocol(Recorder))
        first.transport.write(b"x")
        await self.until(lambda: servers)
        first.transport.abortConnection()
        first.lost.trap(error.ConnectionAborted)
        await self.until(lambda: servers[0].lost is not None)
        servers[0].lost.trap(error.ConnectionLost)
        second = await endpoint.connect(Factory.forProtocol(Recorder))
        second.transport.write(b"y")
        await self.until(lambda: len(servers) == 2)
        await endpoint_port.stopListening()
        await self.until(lambda: second.lost is not None)
        second.lost.trap(error.ConnectionLost)

    async def test_client_address_change(self) -> None:
        """A client whose address changes (NAT rebinding) keeps its connection: the server
        finds it by connection ID and moves to the new path."""
        from vtwist.testing.doubles import EchoRecorder
        from vtwist.transport.quic.endpoints import QuicClientSocket

        port = await self.server(Factory.forProtocol(EchoRecorder))
        client = await self.client(port).connect(Factory.forProtocol(Recorder))
        client.transport.write(b"one")
        await self.until(lambda: bytes(client.data) == b"one")
        session = client.transport.session
        sock = QuicClientSocket()
        sock.session = session
        udp = reactor.listenUDP(0, sock, interface="127.0.0.1")
        self.addCleanup(udp.stopListening)
        self.addCleanup(session.abort, "test over")  # (before its new socket closes)
        session.send = udp.write
        client.transport.write(b"two")
        await self.until(lambda: bytes(client.data) == b"onetwo")

    async def test_endpoint_strings(self) -> None:
        """``quic:`` and ``ds:`` strings give working endpoints."""
        server = serverFromString(reactor, "quic:port=0:interface=127.0.0.1:"
                                           "security=chacha20-poly1305:key=k:header=dtls")
        port = await server.listen(Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        client = clientFromString(reactor, f"quic:host=127.0.0.1:port={port.getHost().port}:"
                                           "security=chacha20-poly1305:key=k:header=dtls")
        self.addCleanup(client.pool.close_all)
        await self.echo(client)
        name = f"vtwist-test-{os.getpid()}"
        ds = await serverFromString(reactor, f"ds:path={name}:abstract=1:padding=1").listen(
            Factory.forProtocol(Echo))
        self.addCleanup(ds.stopListening)
        self.assertEqual(len(ds.getHost().name), SUN_PATH_SIZE)
        await self.echo(clientFromString(reactor, f"ds:path=@{name}:abstract=1:padding=1"))
        with self.assertRaises(error.ConnectError):
            # unpadded: another abstract name, nobody listens there
            await self.echo(clientFromString(reactor, f"ds:path=@{name}"))

    async def echo(self, endpoint: Any) -> None:
        proto = await endpoint.connect(Factory.forProtocol(Recorder))
        proto.transport.write(b"ping")
        await self.until(lambda: bytes(proto.data) == b"ping")
        proto.transport.loseConnection()
        await defer.succeed(None)
