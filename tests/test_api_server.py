"""The API's gRPC-over-HTTP/2 server, driven in memory by an ``h2`` client: calls, statuses
for every kind of bad request, flow control, and a connection that keeps serving."""

from __future__ import annotations

import struct
from types import SimpleNamespace
from typing import Any

import h2.config
import h2.connection
import h2.events
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from vtwist.app.api import services as registry
from vtwist.app.api.context import ApiContext
from vtwist.app.api.errors import GrpcError, Status
from vtwist.app.api.server import GrpcServerFactory
from vtwist.app.api.v2raypb import app_log_command_config_pb2 as logpb
from vtwist.app.api.v2raypb import app_stats_command_command_pb2 as pb
from vtwist.tunnel.stats import StatsManager

STATS = "v2ray.core.app.stats.command.StatsService"
LOGGER = "v2ray.core.app.log.command.LoggerService"


def frame(message: bytes, flag: int = 0) -> bytes:
    """One gRPC length-prefixed message."""
    return struct.pack(">BI", flag, len(message)) + message


class Reply:
    """What came back on one stream."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.data = b""
        self.ended = False

    @property
    def status(self) -> int:
        """grpc-status, from the trailers or a trailers-only response."""
        return int(self.trailers.get("grpc-status", self.headers.get("grpc-status", "-1")))

    @property
    def message(self) -> str:
        """grpc-message."""
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))

    def messages(self) -> list[bytes]:
        """The response's gRPC messages."""
        out, data = [], self.data
        while data:
            flag, length = struct.unpack(">BI", data[:5])
            assert flag == 0
            out.append(data[5:5 + length])
            data = data[5 + length:]
        return out


class Client:
    """An h2 client wired to one server protocol through a StringTransport."""

    def __init__(self, factory: GrpcServerFactory) -> None:
        self.server = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        self.conn.initiate_connection()
        self.replies: dict[int, Reply] = {}
        self.pump()

    def pump(self) -> None:
        """Move bytes both ways until both sides are quiet."""
        for _ in range(1000):
            moved = False
            out = self.conn.data_to_send()
            if out:
                self.server.dataReceived(out)
                moved = True
            back = self.transport.value()
            if back:
                self.transport.clear()
                moved = True
                for event in self.conn.receive_data(back):
                    self._event(event)
            if not moved:
                return

    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            self.replies[event.stream_id].headers = dict(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            self.replies[event.stream_id].trailers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            self.replies[event.stream_id].data += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.replies[event.stream_id].ended = True

    def call(self, path: str, body: bytes | None, *, content_type: str = "application/grpc",
             method: str = "POST", extra: list[tuple[str, str]] | None = None) -> Reply:
        """Send one request (``body``: the DATA bytes, already framed); return its reply."""
        stream_id = self.conn.get_next_available_stream_id()
        self.replies[stream_id] = Reply()
        headers = [(":method", method), (":scheme", "http"), (":path", path),
                   (":authority", "127.0.0.1"), ("content-type", content_type), ("te", "trailers"),
                   *(extra or [])]
        self.conn.send_headers(stream_id, headers, end_stream=body is None)
        if body is not None:
            self.conn.send_data(stream_id, body, end_stream=True)
        self.pump()
        return self.replies[stream_id]


class ApiServerTests(SynchronousTestCase):
    """Every call goes over one HTTP/2 connection, as a panel's channel would."""

    def setUp(self) -> None:
        self.stats = StatsManager()
        self.stats.register("inbound>>>in>>>traffic>>>uplink").value = 10
        self.stats.register("inbound>>>in>>>traffic>>>downlink").value = 20
        self.stats.register("user>>>a@b>>>traffic>>>uplink").value = 5
        self.restarted = 0
        clock = Clock()
        self.context = ApiContext(reactor=clock, stats=self.stats,
                                  restart_logger=self._restart)
        services = registry.build_services([STATS, LOGGER], self.context)
        self.factory = GrpcServerFactory(SimpleNamespace(clock=clock), "api", services)
        self.client = Client(self.factory)

    def _restart(self) -> None:
        self.restarted += 1

    def query(self, pattern: str = "", reset: bool = False) -> dict[str, int]:
        reply = self.client.call(f"/{STATS}/QueryStats", frame(
            pb.QueryStatsRequest(pattern=pattern, reset=reset).SerializeToString()))
        self.assertEqual(reply.status, 0, reply.message)
        self.assertEqual(reply.headers[":status"], "200")
        [message] = reply.messages()
        response = pb.QueryStatsResponse.FromString(message)
        return {s.name: s.value for s in response.stat}

    def assertStatus(self, reply: Reply, status: Status, words: str) -> None:
        self.assertTrue(reply.ended)
        self.assertEqual(reply.status, status, reply.message)
        self.assertIn(words, reply.message)
        self.assertEqual(reply.messages(), [])

    def test_query_stats(self) -> None:
        """QueryStats matches by substring; reset zeroes what it returned."""
        self.assertEqual(self.query(), {"inbound>>>in>>>traffic>>>uplink": 10,
                                        "inbound>>>in>>>traffic>>>downlink": 20,
                                        "user>>>a@b>>>traffic>>>uplink": 5})
        self.assertEqual(self.query("inbound", reset=True),
                         {"inbound>>>in>>>traffic>>>uplink": 10,
                          "inbound>>>in>>>traffic>>>downlink": 20})
        self.assertEqual(self.query("inbound"), {"inbound>>>in>>>traffic>>>uplink": 0,
                                                 "inbound>>>in>>>traffic>>>downlink": 0})
        self.assertEqual(self.query("user")["user>>>a@b>>>traffic>>>uplink"], 5)

    def test_get_stats(self) -> None:
        """GetStats reads one counter; a missing one is V2Ray's UNKNOWN "not found"."""
        reply = self.client.call(f"/{STATS}/GetStats", frame(pb.GetStatsRequest(
            name="user>>>a@b>>>traffic>>>uplink", reset=True).SerializeToString()))
        self.assertEqual(reply.status, 0)
        stat = pb.GetStatsResponse.FromString(reply.messages()[0]).stat
        self.assertEqual((stat.name, stat.value), ("user>>>a@b>>>traffic>>>uplink", 5))
        self.assertEqual(self.stats.counters["user>>>a@b>>>traffic>>>uplink"].value, 0)
        reply = self.client.call(f"/{STATS}/GetStats", frame(
            pb.GetStatsRequest(name="nope").SerializeToString()))
        self.assertStatus(reply, Status.UNKNOWN,
                          "v2ray.com/core/app/stats/command: nope not found.")

    def test_sys_stats(self) -> None:
        """GetSysStats: uptime, open connections, memory."""
        self.stats.active = 3
        reply = self.client.call(f"/{STATS}/GetSysStats", frame(b""))
        response = pb.SysStatsResponse.FromString(reply.messages()[0])
        self.assertEqual(response.NumGoroutine, 3)
        self.assertGreater(response.Sys, 1 << 20)
        self.assertGreater(response.Alloc, 1 << 20)

    def test_restart_logger(self) -> None:
        """RestartLogger calls the context's restart_logger."""
        reply = self.client.call(f"/{LOGGER}/RestartLogger",
                                 frame(logpb.RestartLoggerRequest().SerializeToString()))
        self.assertEqual(reply.status, 0, reply.message)
        self.assertEqual(reply.messages(), [b""])
        self.assertEqual(self.restarted, 1)

    def test_unknown_service_and_method(self) -> None:
        """UNIMPLEMENTED, worded as grpc-go does; the connection keeps serving."""
        self.assertStatus(self.client.call("/v2ray.core.Nope/X", frame(b"")),
                          Status.UNIMPLEMENTED, "unknown service v2ray.core.Nope")
        self.assertStatus(self.client.call(f"/{STATS}/Nope", frame(b"")),
                          Status.UNIMPLEMENTED, f"unknown method Nope for service {STATS}")
        self.assertStatus(self.client.call("/justonepart", frame(b"")),
                          Status.UNIMPLEMENTED, "malformed method name")
        self.assertIn("inbound>>>in>>>traffic>>>uplink", self.query())

    def test_service_not_listed_in_config(self) -> None:
        """A service the config's ``api.services`` leaves out is an unknown service."""
        services = registry.build_services([LOGGER], self.context)
        client = Client(GrpcServerFactory(SimpleNamespace(clock=Clock()), "api", services))
        self.assertStatus(client.call(f"/{STATS}/QueryStats", frame(b"")),
                          Status.UNIMPLEMENTED, f"unknown service {STATS}")

    def test_missing_module_is_unimplemented(self) -> None:
        """A registered service whose module is missing answers UNIMPLEMENTED."""
        self.patch(registry, "SERVICES", {**registry.SERVICES,
                                          "x.Missing": "vtwist.app.api.no_such_module:build"})
        services = registry.build_services(["x.Missing", STATS], self.context)
        self.assertEqual(list(services), [STATS])
        client = Client(GrpcServerFactory(SimpleNamespace(clock=Clock()), "api", services))
        self.assertStatus(client.call("/x.Missing/Any", frame(b"")), Status.UNIMPLEMENTED,
                          "unknown service x.Missing")

    def test_undecodable_protobuf(self) -> None:
        """A message that is not the request's protobuf: INTERNAL, as grpc-go says it."""
        reply = self.client.call(f"/{STATS}/QueryStats", frame(b"\x0a\xff\xff\xff"))
        self.assertStatus(reply, Status.INTERNAL, "grpc: error unmarshalling request")
        self.assertIn("inbound>>>in>>>traffic>>>uplink", self.query())

    def test_malformed_requests(self) -> None:
        """Bad framing, bad headers, no message, two messages: each its status, and the
        connection keeps serving."""
        path = f"/{STATS}/QueryStats"
        self.assertStatus(self.client.call(path, frame(b"", flag=1)), Status.INTERNAL,
                          "compressed")
        self.assertStatus(self.client.call(path, frame(b"", flag=7)), Status.INTERNAL,
                          "bad gRPC message flag")
        self.assertStatus(self.client.call(path, b"\x00\x00\x00"), Status.INTERNAL,
                          "truncated")
        self.assertStatus(self.client.call(path, frame(b"abc")[:-1]), Status.INTERNAL,
                          "truncated")
        self.assertStatus(self.client.call(path, None), Status.INTERNAL, "no request message")
        self.assertStatus(self.client.call(path, frame(b"") + frame(b"")),
                          Status.UNIMPLEMENTED, "more than one request message")
        self.assertStatus(self.client.call(path, struct.pack(">BI", 0, 5 << 20)),
                          Status.RESOURCE_EXHAUSTED, "larger than")
        self.assertStatus(self.client.call(path, frame(b""), content_type="text/plain"),
                          Status.INTERNAL, "content-type")
        self.assertStatus(self.client.call(path, frame(b""), method="GET"),
                          Status.UNIMPLEMENTED, "POST")
        self.assertStatus(self.client.call(path, frame(b""), extra=[("grpc-encoding", "gzip")]),
                          Status.UNIMPLEMENTED, "gzip")
        self.assertEqual(self.query("user"), {"user>>>a@b>>>traffic>>>uplink": 5})
        self.assertFalse(self.transport_closed())

    def transport_closed(self) -> bool:
        return self.client.transport.disconnecting

    def test_not_http2(self) -> None:
        """Bytes that are not HTTP/2 close that connection only."""
        server = self.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertIn("inbound>>>in>>>traffic>>>uplink", self.query())

    def test_own_traffic_counted(self) -> None:
        """The API inbound's counters take its HTTP/2 bytes both ways."""
        up, down = self.stats.register("in-up"), self.stats.register("in-down")
        client = Client(GrpcServerFactory(SimpleNamespace(clock=Clock()), "api",
                                          self.factory.services, (up, down)))
        self.assertGreater(down.value, 0)  # the server's SETTINGS
        before = (up.value, down.value)
        client.call(f"/{STATS}/QueryStats", frame(b""))
        self.assertGreater(up.value, before[0] + 40)
        self.assertGreater(down.value, before[1] + 100)

    def test_large_response_flow_control(self) -> None:
        """A response larger than the stream's window goes out as the client opens it."""
        for i in range(3000):
            self.stats.register(f"user>>>someone-{i:05d}@example.com>>>traffic>>>downlink")
        result = self.query("someone")
        self.assertEqual(len(result), 3000)

    def test_method_errors(self) -> None:
        """A GrpcError from a Deferred is its status; any other exception is INTERNAL and
        logged; a Deferred answer arrives when it fires."""
        pending: Deferred[bytes] = Deferred()

        def boom(data: bytes) -> bytes:
            raise RuntimeError("kaput")

        self.factory.services["t.T"] = SimpleNamespace(methods={
            "Later": lambda data: pending,
            "Refuse": lambda data: fail(GrpcError(Status.NOT_FOUND, "no x")),
            "Boom": boom})
        later = self.client.call("/t.T/Later", frame(b"q"))
        self.assertFalse(later.ended)
        self.assertStatus(self.client.call("/t.T/Refuse", frame(b"")), Status.NOT_FOUND,
                          "no x")
        self.assertStatus(self.client.call("/t.T/Boom", frame(b"")), Status.INTERNAL, "kaput")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        pending.callback(b"answer")
        self.client.pump()
        self.assertTrue(later.ended)
        self.assertEqual((later.status, later.messages()), (0, [b"answer"]))

    def test_grpc_message_is_percent_encoded(self) -> None:
        """Non-ASCII and control characters in grpc-message are percent-encoded."""
        self.factory.services["t.T"] = SimpleNamespace(methods={
            "E": lambda data: fail(GrpcError(Status.NOT_FOUND, "ü\nx%"))})
        reply = self.client.call("/t.T/E", frame(b""))
        self.assertEqual(reply.message, "%C3%BC%0Ax%25")
