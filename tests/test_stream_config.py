"""V2Ray 4.34's protobuf StreamConfig, built as a panel builds it, through
:func:`vtwist.app.api.stream_config.stream_json` and vtwist's config loader: every transport's
settings and TLS arrive as a config file would give them; bad ones get a gRPC status."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import shared_ca, shared_server_cert
from vtwist.app.api.errors import GrpcError, Status
from vtwist.app.api.stream_config import stream_json
from vtwist.app.api.v2raypb import (
    common_protocol_headers_pb2,
    common_serial_typed_message_pb2,
    transport_internet_config_pb2,
    transport_internet_domainsocket_config_pb2,
    transport_internet_headers_http_config_pb2,
    transport_internet_headers_wechat_config_pb2,
    transport_internet_http_config_pb2,
    transport_internet_kcp_config_pb2,
    transport_internet_quic_config_pb2,
    transport_internet_tcp_config_pb2,
    transport_internet_tls_config_pb2,
    transport_internet_websocket_config_pb2,
)
from vtwist.config.node import Node
from vtwist.transport.settings import parse_stream_settings

tls_pb = transport_internet_tls_config_pb2
http_pb = transport_internet_headers_http_config_pb2


def typed(message: Any, name: str = "") -> Any:
    """A TypedMessage holding ``message`` (as serial.ToTypedMessage)."""
    return common_serial_typed_message_pb2.TypedMessage(
        type=name or message.DESCRIPTOR.full_name, value=message.SerializeToString())


def stream(name: str, settings: Any = None, tls: Any = None,
           **kw: Any) -> Any:
    """A StreamConfig as V2Ray's infra/conf builds it."""
    config = transport_internet_config_pb2.StreamConfig(protocol_name=name, **kw)
    if settings is not None:
        config.transport_settings.add(protocol_name=name, settings=typed(settings))
    if tls is not None:
        config.security_type = tls.DESCRIPTOR.full_name
        config.security_settings.add().CopyFrom(typed(tls))
    return config


def server_tls() -> Any:
    cert = shared_server_cert("localhost", "127.0.0.1")
    return tls_pb.Config(certificate=[tls_pb.Certificate(Certificate=cert.cert_pem,
                                                         Key=cert.key_pem)],
                         next_protocol=["h2", "http/1.1"])


class StreamJsonTests(SynchronousTestCase):
    def parsed(self, config: Any, inbound: bool = True) -> Any:
        data = stream_json(config, "receiver_settings.stream_settings")
        warnings: list[str] = []
        result = parse_stream_settings(Node(data, "inbound.streamSettings", warnings.append),
                                       inbound)
        self.assertEqual(warnings, [])
        return result

    def assertRefused(self, config: Any, status: Status, text: str) -> None:
        with self.assertRaises(GrpcError) as caught:
            stream_json(config, "s")
        self.assertEqual(caught.exception.status_code, status)
        self.assertIn(text, caught.exception.message)

    def test_tcp_http_header(self) -> None:
        header = http_pb.Config(
            request=http_pb.RequestConfig(
                version=http_pb.Version(value="1.1"), method=http_pb.Method(value="GET"),
                uri=["/a", "/b"], header=[http_pb.Header(name="Host",
                                                         value=["x.test", "y.test"])]),
            response=http_pb.ResponseConfig(status=http_pb.Status(code="404",
                                                                  reason="Not Found")))
        tcp = transport_internet_tcp_config_pb2.Config(header_settings=typed(header))
        settings = self.parsed(stream("tcp", tcp)).tcp
        self.assertEqual(settings.header_type, "http")
        self.assertEqual(settings.request.paths, ["/a", "/b"])
        self.assertEqual(settings.request.headers, [("Host", ["x.test", "y.test"])])
        self.assertEqual((settings.response.status, settings.response.reason),
                         ("404", "Not Found"))

    def test_plain_tcp_and_deprecated_enum(self) -> None:
        self.assertEqual(self.parsed(stream("")).network, "tcp")
        ws = transport_internet_config_pb2.StreamConfig(protocol=3)  # WebSocket, by enum
        self.assertEqual(self.parsed(ws).network, "ws")

    def test_ws_with_tls(self) -> None:
        ws = transport_internet_websocket_config_pb2.Config(
            path="/ray", header=[transport_internet_websocket_config_pb2.Header(
                key="Host", value="cdn.test")])
        parsed = self.parsed(stream("websocket", ws, server_tls()))
        self.assertEqual((parsed.network, parsed.security), ("ws", "tls"))
        self.assertEqual(parsed.ws.path, "/ray")
        self.assertEqual(parsed.ws.host, "cdn.test")
        self.assertEqual(parsed.tls.alpn, ["h2", "http/1.1"])
        [cert] = parsed.tls.certificates
        self.assertEqual(cert.usage, "encipherment")

    def test_client_tls_verify_certificate(self) -> None:
        ca = shared_ca().cert_pem
        tls = tls_pb.Config(server_name="localhost", allow_insecure=False,
                            certificate=[tls_pb.Certificate(
                                Certificate=ca, usage=tls_pb.Certificate.AUTHORITY_VERIFY)])
        parsed = self.parsed(stream("tcp", tls=tls), inbound=False)
        self.assertEqual(parsed.tls.server_name, "localhost")
        self.assertEqual([c.usage for c in parsed.tls.certificates], ["verify"])

    def test_kcp(self) -> None:
        kcp_pb = transport_internet_kcp_config_pb2
        kcp = kcp_pb.Config(mtu=kcp_pb.MTU(value=1200), tti=kcp_pb.TTI(value=20),
                            uplink_capacity=kcp_pb.UplinkCapacity(value=50),
                            congestion=True,
                            read_buffer=kcp_pb.ReadBuffer(size=4 * 1024 * 1024),
                            header_config=typed(
                                transport_internet_headers_wechat_config_pb2.VideoConfig()),
                            seed=kcp_pb.EncryptionSeed(seed="s3cret"))
        parsed = self.parsed(stream("mkcp", kcp))
        self.assertEqual(parsed.network, "kcp")
        data = stream_json(stream("mkcp", kcp), "s")["kcpSettings"]
        self.assertEqual(data, {"congestion": True, "mtu": 1200, "tti": 20,
                                "uplinkCapacity": 50, "readBufferSize": 4,
                                "header": {"type": "wechat-video"}, "seed": "s3cret"})

    def test_h2_quic_ds_grpc(self) -> None:
        h2 = transport_internet_http_config_pb2.Config(host=["a.test"], path="/h2")
        parsed = self.parsed(stream("http", h2, server_tls()))
        self.assertEqual((parsed.network, parsed.settings.hosts, parsed.settings.path),
                         ("h2", ["a.test"], "/h2"))
        quic = transport_internet_quic_config_pb2.Config(
            key="k", security=common_protocol_headers_pb2.SecurityConfig(
                type=common_protocol_headers_pb2.CHACHA20_POLY1305))
        data = stream_json(stream("quic", quic), "s")
        self.assertEqual(data["quicSettings"], {"security": "chacha20-poly1305", "key": "k",
                                                "header": {"type": "none"}})
        ds = transport_internet_domainsocket_config_pb2.Config(path="/tmp/x.sock",
                                                               abstract=True)
        self.assertEqual(stream_json(stream("domainsocket", ds), "s")["dsSettings"],
                         {"path": "/tmp/x.sock", "abstract": True, "padding": False})
        # v2fly's grpc.encoding.Config {host = 1, service_name = 2}: no 4.34 proto
        grpc = transport_internet_config_pb2.StreamConfig(protocol_name="grpc")
        grpc.transport_settings.add(protocol_name="grpc").settings.CopyFrom(
            common_serial_typed_message_pb2.TypedMessage(
                type="v2ray.core.transport.internet.grpc.encoding.Config",
                value=b"\x0a\x06a.test\x12\x03Tun"))
        parsed = self.parsed(grpc)
        self.assertEqual((parsed.network, parsed.settings.service_name), ("grpc", "Tun"))

    def test_sockopt(self) -> None:
        config = stream("tcp", socket_settings=transport_internet_config_pb2.SocketConfig(
            mark=7, tfo=1, accept_proxy_protocol=True))
        parsed = self.parsed(config)
        self.assertEqual((parsed.sockopt.mark, parsed.sockopt.tcp_fast_open), (7, True))

    def test_refused(self) -> None:
        self.assertRefused(stream("xhttp"), Status.UNIMPLEMENTED, "'xhttp'")
        self.assertRefused(stream("tcp", security_type="v2ray.core.transport.internet.xtls"
                                  ".Config"), Status.UNIMPLEMENTED, "xtls")
        bad = stream("websocket")
        bad.transport_settings.add(protocol_name="websocket").settings.CopyFrom(
            common_serial_typed_message_pb2.TypedMessage(
                type="v2ray.core.transport.internet.websocket.Config", value=b"\xff\xff"))
        self.assertRefused(bad, Status.INVALID_ARGUMENT, "does not decode")
        mismatch = stream("websocket")
        mismatch.transport_settings.add(protocol_name="websocket").settings.CopyFrom(
            typed(transport_internet_tcp_config_pb2.Config()))
        self.assertRefused(mismatch, Status.INVALID_ARGUMENT, "websocket with")
        grpc = stream("grpc")
        grpc.transport_settings.add(protocol_name="grpc").settings.CopyFrom(
            common_serial_typed_message_pb2.TypedMessage(
                type="v2ray.core.transport.internet.grpc.encoding.Config", value=b"\x12\x09ab"))
        self.assertRefused(grpc, Status.INVALID_ARGUMENT, "does not decode")
