"""The HTTP/2 tunnel core (vtwist.transport.h2) and the gRPC gun profile, pumped in memory.

Our client and server are checked against each other and against a bare ``h2`` peer driven
by the test (so the wire is what V2Ray 4.34's http transport and the gun format say: the
headers, 404s, gRPC messages and trailers), plus flow control with a stalled reader.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    DataReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from twisted.internet import defer, error, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from vtwist.testing.doubles import Echo
from vtwist.transport.grpc import framing
from vtwist.transport.grpc.profile import GunProfile
from vtwist.transport.grpc.settings import GRPCSettings
from vtwist.transport.h2 import connection as h2conn
from vtwist.transport.h2 import framerepr
from vtwist.transport.h2 import stream as h2stream
from vtwist.transport.h2.connection import H2Protocol
from vtwist.transport.h2.profile import HTTPProfile
from vtwist.transport.h2.settings import HTTPSettings

HTTP = HTTPSettings(hosts=["a.test", "b.test"], path="/tunnel")


class Collect(Protocol):
    """Keeps what arrives; ``lost`` fires with the reason."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lost: defer.Deferred = defer.Deferred()
        self.reason: Any = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.reason = reason
        self.lost.callback(None)


def collecting() -> tuple[list[Collect], Callable[[], Collect]]:
    """(the server-side protocols made so far, a factory function making them)."""
    servers: list[Collect] = []

    def server_app() -> Collect:
        servers.append(Collect())
        return servers[-1]

    return servers, server_app


@implementer(IHalfCloseableProtocol)
class HalfCollect(Collect):
    """Collect, told of the peer's END_STREAM; answers ``reply`` then closes."""

    reply = b"bye"

    def readConnectionLost(self) -> None:
        self.eof = True
        self.transport.write(self.reply)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class Pair:
    """Our client and server H2Protocol connected through iosim."""

    def __init__(self, client_profile: Any, server_profile: Any, server_app: Any,
                 clock: task.Clock) -> None:
        self.server = H2Protocol(server_profile, client=False,
                                 appFactory=Factory.forProtocol(server_app), clock=clock)
        self.client = H2Protocol(client_profile, client=True, scheme="http",
                                 authority="server.test", clock=clock)
        self.sio = iosim.FakeTransport(self.server, isServer=True)
        self.cio = iosim.FakeTransport(self.client, isServer=False)
        self.pump = iosim.connect(self.server, self.sio, self.client, self.cio, greet=False)

    def open(self, app: Protocol) -> defer.Deferred:
        ready: defer.Deferred = defer.Deferred()
        self.client.openStream(Factory.forProtocol(lambda: app), ready)
        self.pump.flush()
        return ready


class RawPeer:
    """A bare ``h2`` connection on one end of an iosim pair (the test plays the peer)."""

    def __init__(self, ours: H2Protocol, client_side: bool) -> None:
        self.h2 = H2Connection(H2Configuration(client_side=client_side, header_encoding="utf-8"))
        self.events: list[Any] = []
        peer = self

        class Wire(Protocol):
            def dataReceived(self, data: bytes) -> None:
                events = peer.h2.receive_data(data)
                peer.events += events
                for event in events:
                    if isinstance(event, DataReceived) and event.flow_controlled_length:
                        peer.h2.acknowledge_received_data(event.flow_controlled_length,
                                                          event.stream_id)
                self.transport.write(peer.h2.data_to_send())

        self.wire = Wire()
        if client_side:
            server, client = ours, self.wire
        else:
            server, client = self.wire, ours
        sio = iosim.FakeTransport(server, isServer=True)
        cio = iosim.FakeTransport(client, isServer=False)
        self.pump = iosim.connect(server, sio, client, cio, greet=False)
        self.h2.initiate_connection()
        self.send()

    def send(self) -> None:
        self.wire.transport.write(self.h2.data_to_send())
        self.pump.flush()

    def of(self, kind: type, sid: int | None = None) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)
                and (sid is None or getattr(e, "stream_id", None) == sid)]

    def body(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.of(DataReceived, sid))


class Case(SynchronousTestCase):
    def assertLost(self, app: Collect, kind: type) -> None:
        self.successResultOf(app.lost)
        self.assertTrue(app.reason.check(kind), app.reason)


class HTTPWireTests(Case):
    """V2Ray 4.34's http transport on the wire."""

    def setUp(self) -> None:
        self.clock = task.Clock()

    def serve(self, app: Any = Echo) -> tuple[H2Protocol, RawPeer]:
        server = H2Protocol(HTTPProfile(HTTP), client=False, appFactory=Factory.forProtocol(app),
                            clock=self.clock)
        return server, RawPeer(server, client_side=True)

    def request(self, peer: RawPeer, host: str, path: str, method: str = "PUT") -> int:
        sid = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(sid, [(":method", method), (":scheme", "https"),
                                   (":authority", host), (":path", path)])
        peer.send()
        return sid

    def test_client_request(self) -> None:
        """PUT to the path, a host from the list, Accept-Encoding: identity; 200 opens it."""
        client = H2Protocol(HTTPProfile(HTTP), client=True, clock=self.clock)
        peer = RawPeer(client, client_side=False)
        app = Collect()
        ready: defer.Deferred = defer.Deferred()
        client.openStream(Factory.forProtocol(lambda: app), ready)
        peer.pump.flush()
        (request,) = peer.of(RequestReceived)
        headers = dict(request.headers)
        self.assertEqual(headers[":method"], "PUT")
        self.assertEqual(headers[":path"], "/tunnel")
        self.assertIn(headers[":authority"], ("a.test", "b.test"))
        self.assertEqual(headers["accept-encoding"], "identity")
        self.assertNoResult(ready)  # V2Ray's client waits for the response
        peer.h2.send_headers(request.stream_id, [(":status", "200")])
        peer.h2.send_data(request.stream_id, b"from server")
        peer.send()
        self.assertIs(self.successResultOf(ready), app)
        self.assertEqual(bytes(app.data), b"from server")
        app.transport.write(b"x" * 100000)
        peer.pump.flush()
        self.assertEqual(peer.body(request.stream_id), b"x" * 100000)

    def test_client_refused(self) -> None:
        """A 404 fails the connect."""
        client = H2Protocol(HTTPProfile(HTTP), client=True, clock=self.clock)
        peer = RawPeer(client, client_side=False)
        ready: defer.Deferred = defer.Deferred()
        client.openStream(Factory.forProtocol(Collect), ready)
        peer.pump.flush()
        (request,) = peer.of(RequestReceived)
        peer.h2.send_headers(request.stream_id, [(":status", "404")], end_stream=True)
        peer.send()
        failure = self.failureResultOf(ready, error.ConnectError)
        self.assertIn("HTTP 404", str(failure.value))
        self.assertEqual(client.streams, {})

    def test_server_accepts(self) -> None:
        """200 with Cache-Control: no-store; the body is echoed; a path under ours is fine."""
        server, peer = self.serve()
        sid = self.request(peer, "b.test", "/tunnel/deeper?q=1")
        (response,) = peer.of(ResponseReceived, sid)
        self.assertEqual(dict(response.headers),
                         {":status": "200", "cache-control": "no-store"})
        peer.h2.send_data(sid, b"ping" * 1000)
        peer.send()
        self.assertEqual(peer.body(sid), b"ping" * 1000)
        peer.h2.end_stream(sid)
        peer.send()
        self.assertTrue(peer.of(StreamEnded, sid))
        self.assertEqual(server.streams, {})

    def test_forwarded_for(self) -> None:
        """X-Forwarded-For's first address is the peer (port 0), as V2Ray's server says."""
        apps: list[Collect] = []

        def app() -> Collect:
            apps.append(Collect())
            return apps[-1]

        server, peer = self.serve(app)
        sid = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(sid, [(":method", "PUT"), (":scheme", "https"),
                                   (":authority", "a.test"), (":path", "/tunnel"),
                                   ("x-forwarded-for", "203.0.113.7, 10.0.0.1")])
        peer.send()
        self.assertEqual(apps[0].transport.getPeer(), IPv4Address("TCP", "203.0.113.7", 0))

    def test_server_404(self) -> None:
        """A host not in the list, or a path not under ours: 404, no application."""
        built: list[Any] = []

        def app() -> Protocol:
            built.append(1)
            return Echo()

        for host, path in [("c.test", "/tunnel"), ("a.test", "/other"), ("a.test", "/"),
                           ("", "/tunnel")]:
            server, peer = self.serve(app)
            sid = self.request(peer, host or "x", path) if host else None
            if sid is None:
                continue
            (response,) = peer.of(ResponseReceived, sid)
            self.assertEqual(dict(response.headers)[":status"], "404")
            self.assertTrue(peer.of(StreamEnded, sid) or peer.of(StreamReset, sid))
            # The connection still serves good requests.
            good = self.request(peer, "a.test", "/tunnel")
            self.assertEqual(dict(peer.of(ResponseReceived, good)[0].headers)[":status"], "200")
        self.assertEqual(len(built), 3)

    def test_not_http2(self) -> None:
        """An HTTP/1 request (even cut anywhere) gets Go's 404, as V2Ray's server answers it;
        other bytes are dropped; the preface cut anywhere is fine."""
        def serve() -> tuple[H2Protocol, Any]:
            server = H2Protocol(HTTPProfile(HTTP), client=False,
                                appFactory=Factory.forProtocol(Echo), clock=self.clock)
            transport = iosim.FakeTransport(server, isServer=True)
            server.makeConnection(transport)
            self.assertEqual(transport.stream, [])  # nothing until the client's preface
            return server, transport

        request = b"GET /tunnel HTTP/1.1\r\nHost: a.test\r\n\r\n"
        for cut in (1, 5, 20, len(request)):
            server, transport = serve()
            server.dataReceived(request[:cut])
            server.dataReceived(request[cut:])
            self.assertTrue(transport.disconnecting, cut)
            self.assertTrue(b"".join(transport.stream).startswith(b"HTTP/1.1 404 Not Found\r\n"))
        server, transport = serve()
        server.dataReceived(b"\x16\x03\x01\x02\x00garbage")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.stream, [])
        server, transport = serve()
        for i in range(len(h2conn.PREFACE)):
            server.dataReceived(h2conn.PREFACE[i:i + 1])
        self.assertFalse(transport.disconnecting)
        self.assertTrue(transport.stream)  # our SETTINGS

    def test_no_stream_timeout(self) -> None:
        """A server connection that opens no stream is closed after FIRST_STREAM_TIMEOUT."""
        server = H2Protocol(HTTPProfile(HTTP), client=False,
                            appFactory=Factory.forProtocol(Echo), clock=self.clock)
        transport = iosim.FakeTransport(server, isServer=True)
        server.makeConnection(transport)
        self.clock.advance(h2conn.FIRST_STREAM_TIMEOUT - 0.5)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)


class GunWireTests(Case):
    """The gun format on the wire (v2fly/Xray): path, headers, Hunk messages, trailers."""

    def setUp(self) -> None:
        self.clock = task.Clock()

    def test_client_stream(self) -> None:
        for multi, path in [(False, "/svc/Tun"), (True, "/svc/TunMulti")]:
            client = H2Protocol(GunProfile(GRPCSettings("svc", multi)), client=True,
                                scheme="https", authority="example.test", clock=self.clock)
            peer = RawPeer(client, client_side=False)
            app = Collect()
            ready: defer.Deferred = defer.Deferred()
            client.openStream(Factory.forProtocol(lambda app=app: app), ready)
            peer.pump.flush()
            self.assertIs(self.successResultOf(ready), app)  # no wait for the response
            app.transport.write(b"hello")
            peer.pump.flush()
            (request,) = peer.of(RequestReceived)
            self.assertEqual(request.headers[:4], [(":method", "POST"), (":scheme", "https"),
                                                   (":path", path),
                                                   (":authority", "example.test")])
            headers = dict(request.headers)
            self.assertEqual(headers["content-type"], "application/grpc")
            self.assertEqual(headers["te"], "trailers")
            sid = request.stream_id
            body = peer.body(sid)
            self.assertEqual(body, b"\x00\x00\x00\x00\x07\x0a\x05hello")
            reply = (framing.multi_hunk_message([b"wor", b"ld"]) if multi
                     else framing.hunk_message(b"world"))
            peer.h2.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
            peer.h2.send_data(sid, reply[:3])
            peer.h2.send_data(sid, reply[3:])
            peer.h2.send_headers(sid, [("grpc-status", "0")], end_stream=True)
            peer.send()
            self.assertEqual(bytes(app.data), b"world")
            self.successResultOf(app.lost)
            self.assertTrue(app.reason.check(error.ConnectionDone), app.reason)

    def test_server_stream(self) -> None:
        """Both methods answered, Hunks echoed, grpc-status 0 trailers at the end."""
        for path, multi in [("/svc/Tun", False), ("/svc/TunMulti", True)]:
            server = H2Protocol(GunProfile(GRPCSettings("svc")), client=False,
                                appFactory=Factory.forProtocol(Echo), clock=self.clock)
            peer = RawPeer(server, client_side=True)
            sid = peer.h2.get_next_available_stream_id()
            peer.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                       (":authority", "x"), (":path", path),
                                       ("content-type", "application/grpc"),
                                       ("te", "trailers")])
            message = (framing.multi_hunk_message([b"ab", b"cd"]) if multi
                       else framing.hunk_message(b"abcd"))
            peer.h2.send_data(sid, message, end_stream=True)
            peer.send()
            (response,) = peer.of(ResponseReceived, sid)
            self.assertEqual(dict(response.headers),
                             {":status": "200", "content-type": "application/grpc"})
            expected = (framing.multi_hunk_message([b"abcd"]) if multi
                        else framing.hunk_message(b"abcd"))
            self.assertEqual(peer.body(sid), expected)
            (trailers,) = peer.of(TrailersReceived, sid)
            self.assertEqual(dict(trailers.headers), {"grpc-status": "0"})

    def test_large_frame_with_settings_ack(self) -> None:
        """Our frame size holds from the start: a peer's SETTINGS ACK and a frame of the size
        we allowed, read together, are fine (h2 alone refused the frame; grpcio sends so)."""
        server = H2Protocol(GunProfile(GRPCSettings("svc")), client=False,
                            appFactory=Factory.forProtocol(Echo), clock=self.clock)
        transport = iosim.FakeTransport(server, isServer=True)
        server.makeConnection(transport)
        peer = H2Connection(H2Configuration(client_side=True))
        peer.initiate_connection()
        server.dataReceived(peer.data_to_send())
        peer.receive_data(b"".join(transport.stream))  # our SETTINGS: the peer ACKs them
        self.assertEqual(peer.max_outbound_frame_size, h2conn.MAX_FRAME)
        sid = peer.get_next_available_stream_id()
        peer.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                                (":path", "/svc/Tun"), ("content-type", "application/grpc")])
        message = framing.hunk_message(os.urandom(60000))
        peer.send_data(sid, message)
        transport.stream.clear()
        server.dataReceived(peer.data_to_send())  # the ACK, the headers and the big frame
        self.assertFalse(transport.disconnecting)
        events = peer.receive_data(b"".join(transport.stream))
        echoed = b"".join(e.data for e in events if isinstance(e, DataReceived))
        self.assertEqual(echoed, message)

    def test_server_refusals(self) -> None:
        """Unknown method: grpc-status 12 (trailers-only); not gRPC: 415."""
        cases = [([("content-type", "application/grpc")], "/svc/Nope", "200", "12"),
                 ([("content-type", "text/plain")], "/svc/Tun", "415", None)]
        for extra, path, status, grpc_status in cases:
            server = H2Protocol(GunProfile(GRPCSettings("svc")), client=False,
                                appFactory=Factory.forProtocol(Echo), clock=self.clock)
            peer = RawPeer(server, client_side=True)
            sid = peer.h2.get_next_available_stream_id()
            peer.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                       (":authority", "x"), (":path", path), *extra])
            peer.send()
            (response,) = peer.of(ResponseReceived, sid)
            headers = dict(response.headers)
            self.assertEqual(headers[":status"], status)
            self.assertEqual(headers.get("grpc-status"), grpc_status)
            self.assertEqual(server.streams, {})

    def test_bad_message_resets(self) -> None:
        """A compressed message (never negotiated) resets the stream."""
        server = H2Protocol(GunProfile(GRPCSettings("svc")), client=False,
                            appFactory=Factory.forProtocol(Collect), clock=self.clock)
        peer = RawPeer(server, client_side=True)
        sid = peer.h2.get_next_available_stream_id()
        peer.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"),
                                   (":authority", "x"), (":path", "/svc/Tun"),
                                   ("content-type", "application/grpc")])
        peer.h2.send_data(sid, b"\x01\x00\x00\x00\x01x")
        peer.send()
        self.assertTrue(peer.of(StreamReset, sid))
        self.assertEqual(server.streams, {})


class PairTests(Case):
    """Our client and server together."""

    def setUp(self) -> None:
        self.clock = task.Clock()

    def roundtrip(self, profile: Any) -> None:
        pair = Pair(profile, profile, Echo, self.clock)
        apps = [Collect() for _ in range(4)]
        readies = [pair.open(app) for app in apps]
        for ready, app in zip(readies, apps, strict=True):
            self.assertIs(self.successResultOf(ready), app)
        payloads = [os.urandom(300_000 + i) for i in range(4)]
        for app, payload in zip(apps, payloads, strict=True):
            app.transport.write(payload)
        pair.pump.flush()
        for app, payload in zip(apps, payloads, strict=True):
            self.assertEqual(bytes(app.data), payload)
            app.transport.loseConnection()
        pair.pump.flush()
        for app in apps:
            self.assertLost(app, error.ConnectionDone)
        self.assertEqual(pair.client.streams, {})
        self.assertEqual(pair.server.streams, {})
        self.assertEqual(len({app.transport.stream_id for app in apps}), 4)

    def test_http_roundtrip(self) -> None:
        self.roundtrip(HTTPProfile(HTTP))

    def test_gun_roundtrip(self) -> None:
        self.roundtrip(GunProfile(GRPCSettings("svc")))

    def test_multi_roundtrip(self) -> None:
        self.roundtrip(GunProfile(GRPCSettings("/my/path/Tun1|Multi1", multi_mode=True)))

    def test_gun_unknown_method(self) -> None:
        """A client on the wrong service gets a connection that fails with the status."""
        pair = Pair(GunProfile(GRPCSettings("other")), GunProfile(GRPCSettings("svc")), Echo,
                    self.clock)
        app = Collect()
        self.successResultOf(pair.open(app))
        self.successResultOf(app.lost)
        self.assertIn("grpc-status 12", str(app.reason.value))

    def test_half_close(self) -> None:
        """loseWriteConnection ends our side; the server answers and closes."""
        pair = Pair(HTTPProfile(HTTP), HTTPProfile(HTTP), HalfCollect, self.clock)
        app = Collect()
        self.successResultOf(pair.open(app))
        app.transport.write(b"question")
        app.transport.loseWriteConnection()
        pair.pump.flush()
        self.assertEqual(bytes(app.data), b"bye")
        self.assertLost(app, error.ConnectionDone)

    def test_abort_resets(self) -> None:
        """abortConnection resets the stream; the server side is told it was lost."""
        servers, server_app = collecting()
        pair = Pair(HTTPProfile(HTTP), HTTPProfile(HTTP), server_app, self.clock)
        app = Collect()
        self.successResultOf(pair.open(app))
        app.transport.abortConnection()
        pair.pump.flush()
        self.assertLost(app, error.ConnectionAborted)
        self.assertLost(servers[0], error.ConnectionLost)
        # The connection goes on serving.
        other = Collect()
        self.successResultOf(pair.open(other))

    def test_connection_lost(self) -> None:
        """The TCP connection going away ends every stream with an error."""
        pair = Pair(HTTPProfile(HTTP), HTTPProfile(HTTP), Echo, self.clock)
        app = Collect()
        self.successResultOf(pair.open(app))
        pair.cio.reportDisconnect()
        pair.client.connectionLost(error.ConnectionLost())
        self.assertLost(app, error.ConnectionLost)
        self.assertFalse(pair.client.canOpenStream())

    def test_write_from_resume_inside_flush(self) -> None:
        """A producer resumed by a flush that writes its last bytes and closes right there:
        those bytes go out (the flush takes another pass), the stream ends."""
        servers, server_app = collecting()
        pair = Pair(HTTPProfile(HTTP), HTTPProfile(HTTP), server_app, self.clock)
        app = Collect()
        self.successResultOf(pair.open(app))
        block = os.urandom(100_000)
        transport = app.transport

        class LastWords:
            resumed = 0

            def pauseProducing(self) -> None:
                pass

            def resumeProducing(self) -> None:
                self.resumed += 1
                transport.unregisterProducer()
                transport.write(b"the end")
                transport.loseConnection()

            def stopProducing(self) -> None:
                pass

        producer = LastWords()
        transport.registerProducer(producer, True)
        transport.pauseProducing()  # our reading side: irrelevant here
        for _ in range(20):  # past the window and HIGH_WATER: the producer is paused
            transport.write(block)
        self.assertTrue(transport.producerPaused)
        for _ in range(50):
            pair.pump.flush()
            self.clock.advance(0)
        self.assertEqual(producer.resumed, 1)
        self.assertEqual(bytes(servers[0].data), block * 20 + b"the end")
        self.assertTrue(transport.finished)

    def test_stalled_reader(self) -> None:
        """A paused reader holds at most one stream window; the writer's producer is paused
        once its buffer passes HIGH_WATER; all arrives in order after resuming."""
        for profile in (HTTPProfile(HTTP), GunProfile(GRPCSettings("svc"))):
            servers, server_app = collecting()
            pair = Pair(profile, profile, server_app, self.clock)
            app = Collect()
            self.successResultOf(pair.open(app))
            pair.pump.flush()
            reader = servers[0]
            reader.transport.pauseProducing()

            class Producer:
                paused = False

                def pauseProducing(self) -> None:
                    self.paused = True

                def resumeProducing(self) -> None:
                    self.paused = False

                def stopProducing(self) -> None:
                    pass

            producer = Producer()
            app.transport.registerProducer(producer, True)
            sent = hashlib.sha256()
            block = os.urandom(32768)
            total = 0
            for _ in range(1000):  # until the producer is paused
                if producer.paused:
                    break
                app.transport.write(block)
                sent.update(block)
                total += len(block)
                pair.pump.flush()
            self.assertTrue(producer.paused)
            stream = reader.transport
            held = sum(len(d) for d, _ in stream.pending)
            self.assertLessEqual(held, h2conn.STREAM_WINDOW + 65536)
            self.assertEqual(len(reader.data), 0)
            self.assertLessEqual(len(app.transport.buffer),
                                 h2stream.HIGH_WATER + 2 * len(block))
            self.assertLess(total, 4 << 20)
            reader.transport.resumeProducing()
            self.assertEqual(len(reader.data), 0)  # delivered from the reactor, as TCP does
            for _ in range(100):
                self.clock.advance(0)
                pair.pump.flush()
            self.assertFalse(producer.paused)
            self.assertEqual(len(reader.data), total)
            self.assertEqual(hashlib.sha256(reader.data).digest(), sent.digest())


class FrameReprTests(SynchronousTestCase):
    def test_quick_repr_matches_hyperframe(self) -> None:
        """The cheaper hyperframe ``_raw_data_repr`` gives hyperframe's exact text."""
        import binascii

        def reference(data: bytes | None) -> str:  # hyperframe 6.1's
            if not data:
                return "None"
            r = binascii.hexlify(data).decode("ascii")
            if len(r) > 20:
                r = r[:20] + "..."
            return "<hex:" + r + ">"

        for data in (None, b"", b"a", bytes(10), bytes(range(11)), os.urandom(70000)):
            self.assertEqual(framerepr._quick_raw_data_repr(data), reference(data))
        import hyperframe.frame

        self.assertIs(hyperframe.frame._raw_data_repr, framerepr._quick_raw_data_repr)
