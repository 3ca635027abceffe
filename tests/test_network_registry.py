"""The network registry: built-in entries, and a new network as one module plus one entry.

The toy network here is that module: a loopback-TCP network with its own ``toySettings``
(a greeting the client layer sends first). Registering it makes configs, the layered
endpoints and endpoint strings accept it; unregistering (a cleanup) takes it away again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.config.node import Node
from vtwist.interfaces import INetwork, IStreamLayer
from vtwist.transport import registry, stack
from vtwist.transport.endpoint_strings import parse_client
from vtwist.transport.layer import Layer, LayerClientEndpoint
from vtwist.transport.settings import StreamSettings, parse_stream_settings


# -- the toy network's module -------------------------------------------------------------
@dataclass
class ToySettings:
    """Validated ``toySettings``."""

    greeting: str = "hello"


def parse_toy_settings(node: Node, inbound: bool) -> ToySettings:
    """``toySettings``: an optional ``greeting``."""
    settings = ToySettings(node.str("greeting", "hello"))
    node.warn_unknown()
    return settings


def toy_server(reactor: Any, listen: str, port: int, stream: StreamSettings) -> Any:
    """Listens on loopback TCP."""
    return TCP4ServerEndpoint(reactor, port, interface=listen)


def toy_client(reactor: Any, host: str, port: int, stream: StreamSettings) -> Any:
    """Connects over TCP."""
    return TCP4ClientEndpoint(reactor, host, port)


class GreetingLayer(Layer):
    """Sends the greeting first, then carries the stream."""

    name = "toy"

    def __init__(self, factory: Any, ready: Any, greeting: str) -> None:
        super().__init__(factory, ready)
        self.greeting = greeting

    def handshakeStarted(self) -> None:
        """Greet, then the application may write."""
        self.transport.write(self.greeting.encode() + b"|")
        self.handshakeDone()


def toy_client_layer(endpoint: Any, host: str, port: int, stream: StreamSettings) -> Any:
    """The greeting above the base endpoint."""
    greeting = stream.network_settings["toy"].greeting
    return LayerClientEndpoint(endpoint, lambda f, ready: GreetingLayer(f, ready, greeting))


def toy_from_string(reactor: Any, host: str, port: str) -> Any:
    """``toy:HOST:PORT``."""
    stream = StreamSettings("toy", network_settings={"toy": ToySettings("string")})
    return stack.client_endpoint(reactor, host, int(port), stream)


TOY = registry.Network(
    "toy", ("toy-alias",), "toySettings", parse_toy_settings,
    toy_server, toy_client, None, toy_client_layer,
    endpoint_strings=(registry.EndpointString(
        "toy", None, f"{__name__}:toy_from_string"),),
)


def register_toy(case: SynchronousTestCase) -> None:
    """Register the toy network for one test."""
    registry.register(TOY)
    case.addCleanup(registry.unregister, "toy")


# -- tests -----------------------------------------------------------------------------
class BuiltinTests(SynchronousTestCase):
    def test_entries(self) -> None:
        self.assertEqual(registry.names(),
                         ("tcp", "kcp", "ws", "h2", "grpc", "quic", "domainsocket"))
        self.assertEqual(registry.all_names(), (
            "tcp", "kcp", "mkcp", "ws", "websocket", "h2", "http", "grpc", "gun", "quic",
            "domainsocket", "ds"))
        self.assertIs(registry.lookup("mKCP"), registry.lookup("kcp"))
        self.assertIs(registry.lookup("websocket"), registry.lookup("ws"))
        self.assertIs(registry.lookup("DS"), registry.lookup("domainsocket"))
        self.assertIsNone(registry.lookup("pigeon"))
        self.assertIsNone(registry.unsupported("quic"))
        for network in registry.networks():
            verifyObject(INetwork, network)

    def test_stream_layers(self) -> None:
        """TLS, WebSocket and the HTTP disguise are each one IStreamLayer; the stack puts TLS
        first, then the network's own."""
        from vtwist.transport.tcp.disguise import HTTP_DISGUISE
        from vtwist.transport.tls.layer import TLS
        from vtwist.transport.ws.layer import WEBSOCKET

        for layer in (TLS, WEBSOCKET, HTTP_DISGUISE):
            verifyObject(IStreamLayer, layer)
        self.assertIs(registry.lookup("tcp").stream_layer, HTTP_DISGUISE)
        self.assertIs(registry.lookup("ws").stream_layer, WEBSOCKET)
        self.assertIsNone(registry.lookup("kcp").stream_layer)
        self.assertEqual(stack.layers(StreamSettings("ws", "tls")), (TLS, WEBSOCKET))
        self.assertEqual(stack.layers(StreamSettings("kcp")), (TLS,))
        # QUIC has its TLS inside: no TLS layer above it.
        self.assertEqual(stack.layers(StreamSettings("quic", "tls")), ())
        self.assertEqual(stack.layers(StreamSettings("domainsocket", "tls")), (TLS,))

    def test_function_layer(self) -> None:
        """A network given as plain layer functions gets an IStreamLayer for them."""
        layer = TOY.stream_layer
        verifyObject(IStreamLayer, layer)
        self.assertIs(layer.wrapServer("endpoint", None), "endpoint")

    def test_default_alpn(self) -> None:
        alpn = {n.name: (n.server_alpn, n.client_alpn) for n in registry.networks()}
        self.assertEqual(alpn, {
            "tcp": (("h2",), ("h2", "http/1.1")),
            "kcp": (("h2", "http/1.1"), ("h2", "http/1.1")),
            "ws": (("http/1.1",), ("http/1.1",)),
            "h2": (("h2",), ("h2",)),
            "grpc": (("h2",), ("h2",)),
            "quic": (("h2", "http/1.1"), ("h2", "http/1.1")),
            "domainsocket": (("h2",), ("h2", "http/1.1")),
        })

    def test_keys_and_prefixes(self) -> None:
        self.assertEqual(set(registry.settings_keys()), {
            "tcpSettings", "kcpSettings", "wsSettings", "httpSettings", "quicSettings",
            "grpcSettings", "dsSettings"})
        self.assertEqual(registry.endpoint_prefixes(),
                         ("kcp", "ws", "wss", "h2", "grpc", "quic", "ds"))
        self.assertEqual(registry.link_names(), ("tcp", "kcp", "ws", "h2", "grpc", "quic"))

    def test_names_are_unique(self) -> None:
        for name in ("tcp", "mkcp", "quic", "gun"):
            with self.assertRaises(ValueError):
                registry.register(registry.Network(name))

    def test_unsupported_network(self) -> None:
        # Every network V2Ray 4.34 has is supported now; a listed unsupported one is refused.
        self.assertEqual(registry.UNSUPPORTED, ())
        self.patch(registry, "UNSUPPORTED",
                   (registry.UnsupportedNetwork("pigeonnet", ("pn",), "pigeonSettings"),))
        for name in ("pigeonnet", "pn"):
            with self.assertRaises(ConfigError) as caught:
                parse_stream_settings(Node({"network": name}, "streamSettings"), True)
            self.assertEqual(str(caught.exception),
                             f"streamSettings.network: network {name!r} is not supported "
                             "by vtwist")

    def test_unknown_network_lists_the_registry(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_stream_settings(Node({"network": "pigeon"}, "streamSettings"), True)
        self.assertEqual(str(caught.exception), "streamSettings.network: expected one of "
                                                "tcp, kcp, mkcp, ws, websocket, h2, http, "
                                                "grpc, gun, quic, domainsocket, ds, "
                                                "got 'pigeon'")


class ToyNetworkTests(TestCase):
    """A network registered from a test module works end to end, and goes away again."""

    def test_config(self) -> None:
        register_toy(self)
        warnings: list[str] = []
        config = parse_config({
            "transport": {"toySettings": {"greeting": "shared"}},
            "inbounds": [{"protocol": "socks", "port": 1080,
                          "streamSettings": {"network": "toy-alias"}}],
            "outbounds": [{"protocol": "freedom",
                           "streamSettings": {"network": "toy",
                                              "toySettings": {"greeting": "own"}}}],
        }, warnings.append)
        self.assertEqual(warnings, [])
        self.assertEqual(config.inbounds[0].stream.network, "toy")
        self.assertEqual(config.inbounds[0].stream.settings, ToySettings("shared"))
        self.assertEqual(config.outbounds[0].stream.settings, ToySettings("own"))

    def test_unregistered(self) -> None:
        register_toy(self)
        self.assertIn("toy", registry.names())
        registry.unregister("toy")
        self.addCleanup(registry.register, TOY)  # so that the cleanup can unregister it
        with self.assertRaises(ConfigError) as caught:
            parse_stream_settings(Node({"network": "toy"}, "streamSettings"), True)
        self.assertIn("expected one of tcp, kcp, mkcp, ws, websocket", str(caught.exception))

    async def _exchange(self, client: Any, server_settings: StreamSettings) -> bytes:
        received: defer.Deferred[bytes] = defer.Deferred()

        class Collect(protocol.Protocol):
            buffer = b""

            def dataReceived(self, data: bytes) -> None:
                self.buffer += data
                if self.buffer.endswith(b"data") and not received.called:
                    self.transport.loseConnection()
                    received.callback(self.buffer)

        port = await stack.server_endpoint(reactor, "127.0.0.1", 0, server_settings).listen(
            protocol.Factory.forProtocol(Collect))
        self.addCleanup(port.stopListening)
        proto = await client(port.getHost().port).connect(
            protocol.Factory.forProtocol(protocol.Protocol))
        proto.transport.write(b"data")
        data = await received
        proto.transport.loseConnection()
        return data

    def test_endpoints(self) -> defer.Deferred[None]:
        register_toy(self)
        stream = parse_stream_settings(Node({"network": "toy", "toySettings": {
            "greeting": "hi"}}, "streamSettings"), False)

        async def run() -> None:
            data = await self._exchange(
                lambda port: stack.client_endpoint(reactor, "127.0.0.1", port, stream), stream)
            self.assertEqual(data, b"hi|data")

        return defer.ensureDeferred(run())

    def test_endpoint_string(self) -> defer.Deferred[None]:
        register_toy(self)
        stream = StreamSettings("toy", network_settings={"toy": ToySettings()})

        async def run() -> None:
            data = await self._exchange(
                lambda port: parse_client("toy", reactor, "127.0.0.1", str(port)), stream)
            self.assertEqual(data, b"string|data")

        return defer.ensureDeferred(run())
