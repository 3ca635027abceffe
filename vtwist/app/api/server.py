"""gRPC over HTTP/2 (cleartext, prior knowledge) for the API: unary calls only.

One :class:`GrpcServerProtocol` per connection drives an ``h2`` connection. A request is
``POST /package.Service/Method`` with ``content-type: application/grpc``; its one
length-prefixed message (:mod:`vtwist.transport.grpc.framing`) goes to the service's
method (see :mod:`vtwist.app.api.services`) when the client ends its stream. The answer is
``:status 200``, the framed response and ``grpc-status: 0`` trailers; an error is a
trailers-only response carrying ``grpc-status`` and ``grpc-message``. A bad request ends
its own stream only: the connection keeps serving.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from twisted.internet.defer import maybeDeferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.app.api.errors import GrpcError, Status
from vtwist.transport.grpc.framing import FramingError, MessageDecoder, frame_message
from vtwist.tunnel.inbound import InboundFactory

log = Logger(namespace="vtwist.api")

#: Streams one connection may have open at once (grpc-go's default is unbounded; a bound
#: keeps a misbehaving client from holding unbounded state).
MAX_CONCURRENT_STREAMS = 100


class _Call:
    """One request stream: its method path, its message decoder and what arrived."""

    __slots__ = ("path", "decoder", "messages", "error", "pending", "done", "answered")

    def __init__(self, path: str) -> None:
        self.path = path
        self.decoder = MessageDecoder()
        self.messages: list[bytes] = []
        self.error: GrpcError | None = None
        self.pending = b""  # response bytes waiting for flow-control window
        self.done = False  # the client's side ended: the call runs
        self.answered = False  # the response is in ``pending``


class GrpcServerProtocol(Protocol):
    """Serves unary gRPC calls from ``factory.services`` (full name -> built service)."""

    def __init__(self, factory: GrpcServerFactory) -> None:
        self.factory = factory
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        self.calls: dict[int, _Call] = {}
        self.gone = False

    def connectionMade(self) -> None:
        """Send our SETTINGS."""
        self.conn.local_settings.max_concurrent_streams = MAX_CONCURRENT_STREAMS
        self.conn.initiate_connection()
        self._flush()

    def dataReceived(self, data: bytes) -> None:
        """Feed h2; act on its events."""
        counters = self.factory.counters
        if counters[0] is not None:
            counters[0].value += len(data)
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            log.debug("api: HTTP/2 error from {peer}: {why}", peer=self.transport.getPeer(),
                      why=e)
            self._flush()
            self.transport.loseConnection()
            return
        for event in events:
            self._event(event)
        self._flush()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Forget the calls (answers still being computed are dropped)."""
        self.gone = True
        self.calls.clear()

    # -- events -------------------------------------------------------------------------
    def _event(self, event: Any) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event.stream_id, dict(event.headers))
            if event.stream_ended is not None:
                self._ended(event.stream_id)
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            call = self.calls.get(event.stream_id)
            if call is not None and call.error is None:
                try:
                    call.messages.extend(call.decoder.feed(event.data))
                except FramingError as e:
                    status = Status.RESOURCE_EXHAUSTED if "larger than" in str(e) \
                        else Status.INTERNAL
                    call.error = GrpcError(status, f"grpc: {e}")
            if event.stream_ended is not None:
                self._ended(event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self._ended(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.calls.pop(event.stream_id, None)
        elif isinstance(event, h2.events.WindowUpdated):
            for stream_id in list(self.calls) if event.stream_id == 0 else [event.stream_id]:
                self._send(stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.transport.loseConnection()

    def _request(self, stream_id: int, headers: dict[str, str]) -> None:
        call = _Call(headers.get(":path", ""))
        self.calls[stream_id] = call
        if headers.get(":method") != "POST":
            call.error = GrpcError(Status.UNIMPLEMENTED, "grpc: expected a POST request")
        elif not headers.get("content-type", "").startswith("application/grpc"):
            call.error = GrpcError(Status.INTERNAL, "grpc: content-type is not application/grpc")
        elif headers.get("grpc-encoding", "identity") != "identity":
            call.error = GrpcError(Status.UNIMPLEMENTED,
                                   f"grpc: compression {headers['grpc-encoding']} not supported")

    def _ended(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is None or call.done:
            return
        call.done = True
        if call.error is None:
            if call.decoder.pending:
                call.error = GrpcError(Status.INTERNAL, "grpc: truncated message")
            elif len(call.messages) != 1:
                call.error = GrpcError(
                    Status.INTERNAL if not call.messages else Status.UNIMPLEMENTED,
                    "grpc: no request message" if not call.messages
                    else "grpc: unary method got more than one request message")
        if call.error is not None:
            self._fail(stream_id, call.error)
            return
        try:
            method = self.factory.method(call.path)
        except GrpcError as e:
            self._fail(stream_id, e)
            return
        d = maybeDeferred(method, call.messages[0])
        call.messages = []
        d.addCallbacks(lambda response: self._answer(stream_id, response),
                       lambda failure: self._failed(stream_id, call.path, failure))

    # -- answers ------------------------------------------------------------------------
    def _answer(self, stream_id: int, response: bytes) -> None:
        call = self.calls.get(stream_id)
        if call is None or self.gone:
            return
        if not isinstance(response, bytes | bytearray | memoryview):
            log.error("api: {path} answered {kind}, not bytes", path=call.path,
                      kind=type(response).__name__)
            self._fail(stream_id, GrpcError(Status.INTERNAL, "grpc: bad response"))
            return
        self.conn.send_headers(stream_id, [(":status", "200"),
                                           ("content-type", "application/grpc")])
        call.pending = frame_message(bytes(response))
        call.answered = True
        self._send(stream_id)
        self._flush()

    def _failed(self, stream_id: int, path: str, failure: Failure) -> None:
        if failure.check(GrpcError):
            self._fail(stream_id, failure.value)
            return
        log.failure("api: {path} failed", failure, path=path)
        self._fail(stream_id, GrpcError(Status.INTERNAL, failure.getErrorMessage()))

    def _fail(self, stream_id: int, error: GrpcError) -> None:
        """A trailers-only response: status and message in the one HEADERS frame."""
        self.calls.pop(stream_id, None)
        if self.gone:
            return
        try:
            self.conn.send_headers(stream_id, [
                (":status", "200"), ("content-type", "application/grpc"),
                ("grpc-status", str(error.status_code)),
                ("grpc-message", quote(error.message, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")),
            ], end_stream=True)
        except h2.exceptions.StreamClosedError:
            return
        self._flush()

    def _send(self, stream_id: int) -> None:
        """Send what the stream's window allows; then the OK trailers."""
        call = self.calls.get(stream_id)
        if call is None or not call.answered or self.gone:
            return
        try:
            while call.pending:
                window = min(self.conn.local_flow_control_window(stream_id),
                             self.conn.max_outbound_frame_size)
                if window <= 0:
                    return
                chunk, call.pending = call.pending[:window], call.pending[window:]
                self.conn.send_data(stream_id, chunk)
            if self.conn.streams.get(stream_id) is not None:
                self.conn.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)
        except h2.exceptions.StreamClosedError:
            pass
        self.calls.pop(stream_id, None)
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.gone:
            counters = self.factory.counters
            if counters[1] is not None:
                counters[1].value += len(data)
            self.transport.write(data)


class GrpcServerFactory(InboundFactory):
    """The API inbound's factory: ``services`` maps full gRPC service names to built
    services (each with ``methods``)."""

    def __init__(self, tunnels: Any, tag: str, services: dict[str, Any],
                 counters: tuple[Any, Any] = (None, None)) -> None:
        super().__init__(tunnels, tag)
        self.services = services
        #: the inbound's (uplink, downlink) counters: the API's own traffic, as V2Ray counts
        #: it (its connections are no tunnel); None where the switch is off
        self.counters = counters

    def buildProtocol(self, addr: Any) -> GrpcServerProtocol:
        """One HTTP/2 connection."""
        return self.track(GrpcServerProtocol(self))  # type: ignore[return-value]

    def method(self, path: str) -> Any:
        """The callable for ``/package.Service/Method``; GrpcError UNIMPLEMENTED as grpc-go
        words it when the path is malformed or names no served service or method."""
        parts = path.split("/")
        if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
            raise GrpcError(Status.UNIMPLEMENTED, f"malformed method name: {path!r}")
        service = self.services.get(parts[1])
        if service is None:
            raise GrpcError(Status.UNIMPLEMENTED, f"unknown service {parts[1]}")
        method = service.methods.get(parts[2])
        if method is None:
            raise GrpcError(Status.UNIMPLEMENTED,
                            f"unknown method {parts[2]} for service {parts[1]}")
        return method
