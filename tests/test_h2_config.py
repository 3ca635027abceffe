"""httpSettings and grpcSettings: parsing, Xray's gRPC paths, the registry entries, endpoint
strings (real sockets), and config parsing without Twisted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import clientFromString, serverFromString
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.h2_support import clean_h2
from tests.interop.transport_support import HashingClient, TransportFixture
from tests.netutil import wait_until
from vtwist.config.errors import ConfigError
from vtwist.config.node import Node
from vtwist.testing.doubles import Echo
from vtwist.transport import registry
from vtwist.transport.grpc.settings import GRPCSettings
from vtwist.transport.settings import parse_stream_settings


def parse(obj: Any, inbound: bool = False) -> tuple[Any, list[str]]:
    warnings: list[str] = []
    stream = parse_stream_settings(Node(obj, "streamSettings", warnings.append), inbound)
    return stream, warnings


class HTTPSettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        for network in ("http", "h2", "HTTP"):
            stream, warnings = parse({"network": network})
            self.assertEqual(stream.network, "h2")
            self.assertEqual(stream.settings.hosts, ["www.example.com"])  # V2Ray's default
            self.assertEqual(stream.settings.path, "/")
            self.assertEqual(warnings, [])

    def test_values(self) -> None:
        stream, _ = parse({"network": "http", "httpSettings": {"host": ["a.test", "b.test"],
                                                               "path": "tunnel"}})
        self.assertEqual(stream.settings.hosts, ["a.test", "b.test"])
        self.assertEqual(stream.settings.path, "/tunnel")
        stream, _ = parse({"network": "h2", "httpSettings": {"host": "a.test, b.test"}})
        self.assertEqual(stream.settings.hosts, ["a.test", "b.test"])

    def test_warnings_and_errors(self) -> None:
        _, warnings = parse({"network": "h2", "httpSettings": {"method": "GET", "hots": 1}})
        self.assertEqual(len(warnings), 2)
        self.assertIn("method is not in V2Ray 4.34", warnings[0])
        self.assertIn("hots", warnings[1])
        with self.assertRaises(ConfigError) as caught:
            parse({"network": "h2", "httpSettings": {"path": 5}})
        self.assertIn("streamSettings.httpSettings.path", str(caught.exception))


class GRPCSettingsTests(SynchronousTestCase):
    def test_parse(self) -> None:
        stream, warnings = parse({"network": "gun", "grpcSettings": {
            "serviceName": "svc", "multiMode": True, "authority": "a.test",
            "idle_timeout": 60}})
        self.assertEqual(stream.network, "grpc")
        self.assertEqual(stream.settings, GRPCSettings("svc", True, "a.test"))
        self.assertEqual(warnings, ["streamSettings.grpcSettings: idle_timeout is not "
                                    "supported by vtwist; ignored"])
        with self.assertRaises(ConfigError) as caught:
            parse({"network": "grpc", "grpcSettings": {"multiMode": "yes"}})
        self.assertIn("streamSettings.grpcSettings.multiMode", str(caught.exception))

    def test_paths(self) -> None:
        """Xray's getServiceName / getTunStreamName / getTunMultiStreamName."""
        cases = [("svc", "/svc/Tun", "/svc/TunMulti"),
                 ("", "//Tun", "//TunMulti"),
                 ("a b", "/a%20b/Tun", "/a%20b/TunMulti"),
                 ("/my/sample/path1", "/my/sample/path1", "/my/sample/path1"),
                 ("/my/sample/path1|path2", "/my/sample/path1", "/my/sample/path2"),
                 ("/Tun", "//Tun", "//Tun")]
        for name, tun, multi in cases:
            settings = GRPCSettings(name)
            self.assertEqual((settings.tun_path, settings.multi_path), (tun, multi), name)
            self.assertEqual(settings.client_path, tun)
            self.assertEqual(GRPCSettings(name, multi_mode=True).client_path, multi)


class RegistryTests(SynchronousTestCase):
    def test_entries(self) -> None:
        self.assertIs(registry.lookup("http"), registry.lookup("h2"))
        self.assertIs(registry.lookup("gun"), registry.lookup("grpc"))
        self.assertEqual(registry.lookup("h2").client_alpn, ("h2",))
        self.assertIn("h2", registry.endpoint_prefixes())
        self.assertIn("grpc", registry.endpoint_prefixes())
        self.assertIsNone(registry.unsupported("h2"))
        self.assertIsNone(registry.unsupported("grpc"))

    def test_parse_without_twisted(self) -> None:
        """A config with h2 and grpc inbounds and outbounds parses without Twisted."""
        user = {"id": "b831381d-6324-4d53-ad4f-8cda48b30811", "alterId": 0}
        config = {
            "inbounds": [
                {"protocol": "vmess", "port": 1081, "settings": {"clients": [user]},
                 "streamSettings": {"network": "http", "httpSettings": {"path": "/p"}}},
                {"protocol": "vmess", "port": 1082, "settings": {"clients": [user]},
                 "streamSettings": {"network": "grpc",
                                    "grpcSettings": {"serviceName": "s"}}},
            ],
            "outbounds": [
                {"protocol": "vmess", "settings": {"vnext": [
                    {"address": "127.0.0.1", "port": 443, "users": [user]}]},
                 "streamSettings": {"network": "gun", "security": "tls",
                                    "grpcSettings": {"serviceName": "s", "multiMode": True}}},
            ],
        }
        script = (
            "import json, sys\n"
            "from vtwist.config.loader import parse_config\n"
            "config = parse_config(json.loads(sys.argv[1]))\n"
            "assert [i.stream.network for i in config.inbounds] == ['h2', 'grpc']\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('twisted', 'h2'))))\n")
        result = subprocess.run([sys.executable, "-c", script, json.dumps(config)],
                                capture_output=True, text=True, timeout=60,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout), [])


class GeneratedConfigTests(SynchronousTestCase):
    """``vtwist config server --transport h2|grpc``: a config vtwist parses, and its link."""

    def test_server_configs(self) -> None:
        from vtwist.config.loader import parse_config
        from vtwist.genconfig import ServerSpec, server_config

        for spec, settings in [
            (ServerSpec(transport="h2", tls=True, host="a.example"),
             {"host": ["a.example"]}),
            (ServerSpec(transport="grpc", tls=True, path="svc"), {"serviceName": "svc"}),
            (ServerSpec(transport="grpc", header="multi", path="svc"),
             {"serviceName": "svc", "multiMode": True}),
        ]:
            config, link = server_config(spec)
            stream = config["inbounds"][0]["streamSettings"]
            key = "httpSettings" if spec.transport == "h2" else "grpcSettings"
            for name, value in settings.items():
                self.assertEqual(stream[key][name], value)
            self.assertEqual(parse_config(config).inbounds[0].stream.network, spec.transport)
            self.assertEqual(link.net, spec.transport)


class EndpointStringTests(TestCase):
    """``h2:`` and ``grpc:`` endpoint strings: real sockets, h2c, an echo through them."""

    timeout = 60

    def setUp(self) -> None:
        clean_h2(self)

    async def echo_through(self, server: str, client: str) -> None:
        port = await serverFromString(reactor, server).listen(
            protocol.Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        endpoint = clientFromString(reactor, client.format(port=port.getHost().port))
        clients = [HashingClient(1 << 20) for _ in range(3)]
        for c in clients:
            await endpoint.connect(protocol.Factory.forProtocol(lambda c=c: c))
        await defer.gatherResults([c.done for c in clients])
        for c in clients:
            self.assertEqual(c.got.hexdigest(), c.sent.hexdigest())

    async def test_h2c(self) -> None:
        await self.echo_through("h2:port=0:interface=127.0.0.1:path=/t:hostHeader=a.test",
                                "h2:host=127.0.0.1:port={port}:path=/t/x:hostHeader=a.test")

    async def test_h2c_wrong_host(self) -> None:
        port = await serverFromString(reactor, "h2:0:interface=127.0.0.1:path=/t").listen(
            protocol.Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        endpoint = clientFromString(
            reactor, f"h2:127.0.0.1:{port.getHost().port}:path=/t:hostHeader=b.test")
        with self.assertRaises(Exception) as caught:
            await endpoint.connect(protocol.Factory.forProtocol(HashingClient))
        self.assertIn("HTTP 404", str(caught.exception))

    async def test_h2_tls(self) -> None:
        """Over TLS the client requires ALPN h2: with a CA, and with allowInsecure (whose
        connections must offer ALPN too)."""
        fx = TransportFixture()
        self.addCleanup(fx.cleanup)
        server = (f"h2:port=0:interface=127.0.0.1:hostHeader=localhost:"
                  f"certFile={fx.cert_file}:keyFile={fx.key_file}")
        for extra in ("allowInsecure=true:serverName=localhost",
                      f"caFile={fx.ca_file}:serverName=example.test"):
            await self.echo_through(server, "h2:host=127.0.0.1:port={port}:hostHeader=localhost"
                                            f":tls=true:{extra}")

    async def test_grpc(self) -> None:
        await self.echo_through("grpc:port=0:interface=127.0.0.1:serviceName=svc",
                                "grpc:host=127.0.0.1:port={port}:serviceName=svc:mode=multi")

    async def test_pool(self) -> None:
        """Streams share one pooled connection; when it goes, the next connect dials anew."""
        port = await serverFromString(reactor, "h2:0:interface=127.0.0.1").listen(
            protocol.Factory.forProtocol(Echo))
        self.addCleanup(port.stopListening)
        endpoint = clientFromString(reactor, f"h2:127.0.0.1:{port.getHost().port}:"
                                             "hostHeader=www.example.com")
        clients = [HashingClient(100_000) for _ in range(5)]
        for c in clients:
            await endpoint.connect(protocol.Factory.forProtocol(lambda c=c: c))
        pool = endpoint.pool()
        self.assertEqual(len(pool.connections), 1)
        first = pool.connections[0]
        self.assertEqual({c.transport.connection for c in clients}, {first})
        self.assertEqual(len({c.transport.stream_id for c in clients}), 5)
        await defer.gatherResults([c.done for c in clients])
        await pool.close()
        self.assertEqual(pool.connections, [])
        again = HashingClient(1000)
        await endpoint.connect(protocol.Factory.forProtocol(lambda: again))
        await again.done
        self.assertEqual(again.got.hexdigest(), again.sent.hexdigest())
        self.assertEqual(len(pool.connections), 1)
        self.assertIsNot(pool.connections[0], first)

    async def test_cancel_waiting_connect(self) -> None:
        """A connect cancelled while waiting for the response (a connect deadline) resets its
        stream; the connection is left without it."""
        from twisted.internet.endpoints import TCP4ServerEndpoint

        silent = await self.listen_silent(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"))
        endpoint = clientFromString(reactor, f"h2:127.0.0.1:{silent}")
        d = endpoint.connect(protocol.Factory.forProtocol(HashingClient))
        await wait_until(lambda: endpoint.pool().connections and
                         endpoint.pool().connections[0].streams, "no stream opened")
        connection = endpoint.pool().connections[0]
        d.cancel()
        with self.assertRaises(defer.CancelledError):
            await d
        self.assertEqual(connection.streams, {})

    async def test_server_closes_at_once(self) -> None:
        """A server that closes every connection at once: the connect fails, it does not
        dial again and again."""
        from twisted.internet.endpoints import TCP4ServerEndpoint

        accepted: list[int] = []

        class Closer(protocol.Protocol):
            def connectionMade(self) -> None:
                accepted.append(1)
                self.transport.loseConnection()

        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            protocol.Factory.forProtocol(Closer))
        self.addCleanup(port.stopListening)
        endpoint = clientFromString(reactor, f"h2:127.0.0.1:{port.getHost().port}")
        with self.assertRaises(Exception) as caught:
            await endpoint.connect(protocol.Factory.forProtocol(HashingClient))
        self.assertIn("h2:", str(caught.exception))
        self.assertLessEqual(len(accepted), 2)

    async def listen_silent(self, endpoint: Any) -> int:
        """A TCP server that reads and never answers; its port."""
        connections: list[Any] = []

        class Silent(protocol.Protocol):
            def connectionMade(self) -> None:
                connections.append(self.transport)

        port = await endpoint.listen(protocol.Factory.forProtocol(Silent))
        self.addCleanup(port.stopListening)

        def close() -> None:
            for transport in connections:
                transport.abortConnection()

        self.addCleanup(close)
        return port.getHost().port

    def test_bad_strings(self) -> None:
        for text in ("h2:host=x:bogus=1", "grpc:host=x:serverName=n", "h2:port=1",
                     "grpc:port=0:certFile=x"):
            with self.assertRaises(ValueError):
                if text.startswith(("h2:port", "grpc:port")):
                    serverFromString(reactor, text.replace("h2:port=1", "h2:port=1:x=y"))
                else:
                    clientFromString(reactor, text)
