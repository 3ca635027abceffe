"""HandlerService as panels call it: a gRPC client (grpcio, V2Ray 4.34's messages) adds a
VMess user, which connects at once with a real VMess client; removing it refuses its new
connections while its live transfer completes (sha256). Inbounds and outbounds come and go;
bad calls get their status and the server keeps serving."""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests import test_reload as helpers
from tests.netutil import accepts, free_port, wait_until
from tests.services import start_service
from tests.test_reload import USER_A, Paced, Probe, vmess
from vtwist.app.api.v2raypb import (
    app_proxyman_command_command_pb2 as cmd,
)
from vtwist.app.api.v2raypb import (
    app_proxyman_config_pb2,
    common_net_address_pb2,
    common_protocol_user_pb2,
    common_serial_typed_message_pb2,
    config_pb2,
    proxy_blackhole_config_pb2,
    proxy_socks_config_pb2,
    proxy_vmess_account_pb2,
)
from vtwist.testing.doubles import Echo

try:
    import grpc
except ImportError:  # pragma: no cover - grpcio is in the test extra
    grpc = None

USER_B = str(uuid.UUID(int=0xB0B))
SERVICE = "/v2ray.core.app.proxyman.command.HandlerService/"


def typed(message: Any) -> Any:
    """A V2Ray TypedMessage holding ``message``."""
    return common_serial_typed_message_pb2.TypedMessage(
        type=message.DESCRIPTOR.full_name, value=message.SerializeToString())


class HandlerServiceTests(TestCase):
    timeout = 90

    def setUp(self) -> None:
        if grpc is None:
            self.skipTest("grpcio is not installed (pip install .[test])")
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.echo = port.getHost().port
        self.vmess_port, self.api_port = free_port(), free_port()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.api_port}")
        self.addCleanup(self.channel.close)

    def config(self, vmess_inbound: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "log": {"loglevel": "warning"},
            "api": {"tag": "api", "services": ["HandlerService"]},
            "inbounds": [vmess_inbound or vmess(self.vmess_port, USER_A),
                         {"tag": "api-in", "protocol": "dokodemo-door",
                          "port": self.api_port, "settings": {"address": "127.0.0.1"}}],
            "outbounds": [{"tag": "direct", "protocol": "freedom"}],
            "routing": {"rules": [{"type": "field", "inboundTag": ["api-in"],
                                   "outboundTag": "api"}]}}

    async def start(self) -> Any:
        return await start_service(self.config(), self)

    async def call(self, method: str, request: Any, response_class: Any) -> Any:
        """One unary call from a thread (grpcio blocks); returns the response or the
        grpc.RpcError."""
        return await self.unary(self.channel.unary_unary(
            SERVICE + method, request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_class.FromString), request)

    async def raw(self, method: str, data: bytes) -> Any:
        """:meth:`call` with the request's bytes as they are; the response's bytes."""
        return await self.unary(self.channel.unary_unary(SERVICE + method), data)

    async def unary(self, stub: Any, request: Any) -> Any:
        """``stub(request)`` from a thread; the response or the grpc.RpcError."""
        def call() -> Any:
            try:
                return stub(request, timeout=20)
            except grpc.RpcError as e:
                return e

        return await deferToThread(call)

    def add_user(self, user_id: str, email: str, tag: str = "vm") -> Any:
        account = proxy_vmess_account_pb2.Account(id=user_id, alter_id=0)
        user = common_protocol_user_pb2.User(level=0, email=email, account=typed(account))
        request = cmd.AlterInboundRequest(tag=tag, operation=typed(
            cmd.AddUserOperation(user=user)))
        return self.call("AlterInbound", request, cmd.AlterInboundResponse)

    def remove_user(self, email: str, tag: str = "vm") -> Any:
        request = cmd.AlterInboundRequest(tag=tag, operation=typed(
            cmd.RemoveUserOperation(email=email)))
        return self.call("AlterInbound", request, cmd.AlterInboundResponse)

    async def vmess_echo(self, user: str) -> bytes:
        probe = Probe()
        await helpers.ReloadTests.via_vmess(self, self.vmess_port, user, probe)  # type: ignore[arg-type]
        return await probe.done

    def assertStatus(self, result: Any, code: Any, text: str = "") -> None:
        self.assertIsInstance(result, grpc.RpcError, result)
        self.assertEqual(result.code(), code, result.details())
        self.assertIn(text, result.details())

    async def test_add_and_remove_vmess_user(self) -> None:
        await self.start()
        self.assertEqual(await self.vmess_echo(USER_B), b"")  # not a user yet
        self.assertIsInstance(await self.add_user(USER_B, "b@x"), cmd.AlterInboundResponse)
        self.assertEqual(await self.vmess_echo(USER_B), b"ping")  # at once
        live = Paced()
        await helpers.ReloadTests.via_vmess(self, self.vmess_port, USER_B, live)  # type: ignore[arg-type]
        await live.halfway
        self.assertIsInstance(await self.remove_user("B@X"), cmd.AlterInboundResponse)
        self.assertEqual(await self.vmess_echo(USER_B), b"")  # new connections refused
        self.assertEqual(await self.vmess_echo(USER_A), b"ping")  # others unaffected
        await live.done  # the live one completes
        self.assertEqual((live.received, live.got.hexdigest()),
                         (live.total, live.sent.hexdigest()))

    async def test_user_errors(self) -> None:
        await self.start()
        await self.add_user(USER_B, "b@x")
        self.assertStatus(await self.add_user(str(uuid.uuid4()), "b@x"),
                          grpc.StatusCode.UNKNOWN, "User b@x already exists.")
        self.assertStatus(await self.remove_user("nobody@x"), grpc.StatusCode.UNKNOWN,
                          "User nobody@x not found.")
        self.assertStatus(await self.add_user(USER_B, "c@x", tag="nope"),
                          grpc.StatusCode.NOT_FOUND, "nope")
        self.assertStatus(await self.add_user("not-a-uuid", "d@x"),
                          grpc.StatusCode.INVALID_ARGUMENT, "user.clients[0].id")
        self.assertStatus(await self.add_user(USER_B, "e@x", tag="api-in"),
                          grpc.StatusCode.UNKNOWN, "not a UserManager")
        self.assertStatus(await self.raw("AlterInbound", b"\xff\xff\xff"),
                          grpc.StatusCode.INTERNAL)
        self.assertStatus(await self.raw("NoSuchMethod", b""), grpc.StatusCode.UNIMPLEMENTED)
        self.assertEqual(await self.vmess_echo(USER_B), b"ping")  # still serving

    async def test_inbounds_and_outbounds(self) -> None:
        service = await self.start()
        socks_port = free_port()
        receiver = app_proxyman_config_pb2.ReceiverConfig(
            port_range={"From": socks_port, "To": socks_port},
            listen=common_net_address_pb2.IPOrDomain(ip=bytes([127, 0, 0, 1])))
        added = await self.call("AddInbound", cmd.AddInboundRequest(
            inbound=config_pb2.InboundHandlerConfig(
                tag="socks-api", receiver_settings=typed(receiver),
                proxy_settings=typed(proxy_socks_config_pb2.ServerConfig()))),
            cmd.AddInboundResponse)
        self.assertIsInstance(added, cmd.AddInboundResponse, added)
        self.assertTrue(accepts(socks_port))  # listening when the answer came
        probe = Probe()
        await helpers.ReloadTests.via_socks(self, socks_port, probe)  # type: ignore[arg-type]
        self.assertEqual(await probe.done, b"ping")
        # an outbound in front: the socks inbound's traffic now goes to a blackhole
        added = await self.call("AddOutbound", cmd.AddOutboundRequest(
            outbound=config_pb2.OutboundHandlerConfig(
                tag="hole", proxy_settings=typed(proxy_blackhole_config_pb2.Config()))),
            cmd.AddOutboundResponse)
        self.assertIsInstance(added, cmd.AddOutboundResponse, added)
        self.assertIn("hole", service.dispatcher.by_tag)
        self.assertStatus(await self.call("AddOutbound", cmd.AddOutboundRequest(
            outbound=config_pb2.OutboundHandlerConfig(
                tag="hole", proxy_settings=typed(proxy_blackhole_config_pb2.Config()))),
            cmd.AddOutboundResponse), grpc.StatusCode.ALREADY_EXISTS)
        removed = await self.call("RemoveOutbound", cmd.RemoveOutboundRequest(tag="hole"),
                                  cmd.RemoveOutboundResponse)
        self.assertIsInstance(removed, cmd.RemoveOutboundResponse, removed)
        self.assertNotIn("hole", service.dispatcher.by_tag)
        self.assertStatus(await self.call("RemoveOutbound", cmd.RemoveOutboundRequest(
            tag="hole"), cmd.RemoveOutboundResponse), grpc.StatusCode.NOT_FOUND)
        removed = await self.call("RemoveInbound", cmd.RemoveInboundRequest(tag="socks-api"),
                                  cmd.RemoveInboundResponse)
        self.assertIsInstance(removed, cmd.RemoveInboundResponse, removed)
        self.assertFalse(accepts(socks_port))
        self.assertStatus(await self.call("RemoveInbound", cmd.RemoveInboundRequest(
            tag="socks-api"), cmd.RemoveInboundResponse), grpc.StatusCode.NOT_FOUND)
        self.assertEqual([i.tag for i in service.config.inbounds], ["vm", "api-in"])
        # a port in use, and a transport HandlerService does not build from protobuf
        busy = app_proxyman_config_pb2.ReceiverConfig(
            port_range={"From": self.vmess_port, "To": self.vmess_port},
            listen=common_net_address_pb2.IPOrDomain(ip=bytes([127, 0, 0, 1])))
        self.assertStatus(await self.call("AddInbound", cmd.AddInboundRequest(
            inbound=config_pb2.InboundHandlerConfig(
                tag="busy", receiver_settings=typed(busy),
                proxy_settings=typed(proxy_socks_config_pb2.ServerConfig()))),
            cmd.AddInboundResponse), grpc.StatusCode.UNKNOWN, "failed to listen")
        ws = app_proxyman_config_pb2.ReceiverConfig(
            port_range={"From": socks_port, "To": socks_port})
        ws.stream_settings.protocol_name = "xhttp"
        self.assertStatus(await self.call("AddInbound", cmd.AddInboundRequest(
            inbound=config_pb2.InboundHandlerConfig(
                tag="ws", receiver_settings=typed(ws),
                proxy_settings=typed(proxy_socks_config_pb2.ServerConfig()))),
            cmd.AddInboundResponse), grpc.StatusCode.UNIMPLEMENTED, "'xhttp'")
        self.assertEqual([i.tag for i in service.config.inbounds], ["vm", "api-in"])
        self.assertEqual(await self.vmess_echo(USER_A), b"ping")

    async def test_api_users_survive_reload(self) -> None:
        """A user added through the API stays through reloads that change the inbound's
        users or its other settings (the API path and the reload path are one)."""
        from vtwist.app.reload import SWAP, USERS, Reloader

        service = await self.start()
        current = [self.config()]
        reloader = Reloader(service, lambda: current[0])
        await self.add_user(USER_B, "b@x")
        user_c = str(uuid.UUID(int=0xC))
        current[0] = self.config(vmess(self.vmess_port, USER_A, user_c))
        result = await reloader.reload()
        self.assertEqual(result.inbounds[USERS], 1)
        sniffing = {**vmess(self.vmess_port, USER_A, user_c),
                    "sniffing": {"enabled": True, "destOverride": ["tls"]}}
        current[0] = self.config(sniffing)
        result = await reloader.reload()
        self.assertEqual(result.inbounds[SWAP], 1)
        for user in (USER_A, USER_B, user_c):
            self.assertEqual(await self.vmess_echo(user), b"ping", user)
        self.assertIsInstance(await self.remove_user("b@x"), cmd.AlterInboundResponse)
        self.assertEqual(await self.vmess_echo(USER_B), b"")

    async def test_vmess_over_ws_tls(self) -> None:
        """A panel's AddInbound with a websocket+TLS StreamConfig (certificate as bytes)
        listens over that transport: a config's VMess ws+tls outbound reaches it. Then the
        outbound is replaced by one added through AddOutbound over ws+TLS too, verifying
        the server against a CA certificate given as bytes."""
        from tests.certs import shared_ca, shared_server_cert
        from tests.test_stream_config import stream
        from vtwist.app.api.v2raypb import (
            common_protocol_server_spec_pb2,
            proxy_vmess_inbound_config_pb2,
            proxy_vmess_outbound_config_pb2,
            transport_internet_tls_config_pb2,
            transport_internet_websocket_config_pb2,
        )

        tls_pb = transport_internet_tls_config_pb2
        open_echoes: list[Any] = []

        class Tracked(Echo):
            def connectionMade(self) -> None:
                open_echoes.append(self)

            def connectionLost(self, reason: Any = None) -> None:
                open_echoes.remove(self)

        echo = reactor.listenTCP(0, Factory.forProtocol(Tracked), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        self.echo = echo.getHost().port
        ws_port, socks_port = free_port(), free_port()
        config = self.config()
        config["inbounds"].append({"tag": "socks-in", "protocol": "socks", "port": socks_port,
                                   "listen": "127.0.0.1", "settings": {}})
        config["outbounds"].append({
            "tag": "out", "protocol": "vmess",
            "settings": {"vnext": [{"address": "127.0.0.1", "port": ws_port,
                                    "users": [{"id": USER_A}]}]},
            "streamSettings": {"network": "ws", "security": "tls",
                               "wsSettings": {"path": "/panel"},
                               "tlsSettings": {"serverName": "localhost",
                                               "allowInsecure": True}}})
        config["routing"]["rules"].append({"type": "field", "inboundTag": ["socks-in"],
                                           "outboundTag": "out"})
        await start_service(config, self)

        async def socks_echo() -> bytes:
            probe = Probe()
            await helpers.ReloadTests.via_socks(self, socks_port, probe)  # type: ignore[arg-type]
            return await probe.done

        from vtwist.transport.layer import LayerHandshakeError

        with self.assertRaises(LayerHandshakeError):  # nothing on ws_port yet
            await socks_echo()
        cert = shared_server_cert("localhost", "127.0.0.1")
        ws = transport_internet_websocket_config_pb2.Config(path="/panel")
        tls = tls_pb.Config(certificate=[tls_pb.Certificate(Certificate=cert.cert_pem,
                                                            Key=cert.key_pem)])
        receiver = app_proxyman_config_pb2.ReceiverConfig(
            port_range={"From": ws_port, "To": ws_port},
            listen=common_net_address_pb2.IPOrDomain(ip=bytes([127, 0, 0, 1])),
            stream_settings=stream("websocket", ws, tls))
        account = proxy_vmess_account_pb2.Account(id=USER_A)
        user = common_protocol_user_pb2.User(email="a@x", account=typed(account))
        added = await self.call("AddInbound", cmd.AddInboundRequest(
            inbound=config_pb2.InboundHandlerConfig(
                tag="vm-ws", receiver_settings=typed(receiver), proxy_settings=typed(
                    proxy_vmess_inbound_config_pb2.Config(user=[user])))),
            cmd.AddInboundResponse)
        self.assertIsInstance(added, cmd.AddInboundResponse, added)
        self.assertEqual(await socks_echo(), b"ping")
        # the outbound, from protobuf: ws + TLS verified against the CA (bytes)
        removed = await self.call("RemoveOutbound", cmd.RemoveOutboundRequest(tag="out"),
                                  cmd.RemoveOutboundResponse)
        self.assertIsInstance(removed, cmd.RemoveOutboundResponse, removed)
        client_tls = tls_pb.Config(server_name="localhost", certificate=[tls_pb.Certificate(
            Certificate=shared_ca().cert_pem, usage=tls_pb.Certificate.AUTHORITY_VERIFY)])
        sender = app_proxyman_config_pb2.SenderConfig(
            stream_settings=stream("websocket", ws, client_tls))
        server = common_protocol_server_spec_pb2.ServerEndpoint(
            address=common_net_address_pb2.IPOrDomain(ip=bytes([127, 0, 0, 1])),
            port=ws_port, user=[user])
        added = await self.call("AddOutbound", cmd.AddOutboundRequest(
            outbound=config_pb2.OutboundHandlerConfig(
                tag="out", sender_settings=typed(sender), proxy_settings=typed(
                    proxy_vmess_outbound_config_pb2.Config(Receiver=[server])))),
            cmd.AddOutboundResponse)
        self.assertIsInstance(added, cmd.AddOutboundResponse, added)
        self.assertEqual(await socks_echo(), b"ping")
        await wait_until(lambda: not open_echoes, "the relayed connections close")
