"""One HTTP/2 connection (the ``h2`` library) carrying tunnels, one stream per connection.

:class:`H2Protocol` is the Twisted protocol on the TCP (or TLS) connection, on either side;
each tunnel is an :class:`H2Stream`, the transport of the application protocol above it
(VMess ...). What requests and answers say and how body bytes are framed comes from a
:class:`~vtwist.transport.h2.profile.Profile` (http, gRPC gun).

Flow control: received DATA is acknowledged (WINDOW_UPDATE) only once handed to the
application; a stream whose application paused it (``pauseProducing``) keeps what arrives and
acknowledges nothing, so its peer stops at the stream window (``STREAM_WINDOW``). Sending, a
stream's bytes wait in its buffer until the peer's windows allow them; past ``HIGH_WATER``
the application's producer is paused, and it is resumed when the buffer drains. When the
connection's own transport pauses us, no more DATA is written. Memory per stream is thus
bounded by the windows and the buffer mark, whatever the peers do.

Closing: ``loseConnection`` sends what is buffered, ends the stream (with the profile's
trailers on a server) and resets it if the peer still sends (NO_ERROR from a server, as Go's
does, CANCEL from a client); ``loseWriteConnection`` only ends our side (a half-close);
``abortConnection`` resets at once. The peer ending its side reaches a half-close aware
application as ``readConnectionLost``, others as a close. Bytes held while paused are
delivered from the reactor after ``resumeProducing``, never inside it (as TCP does).

A server says nothing until the client's preface has come: an HTTP/1 request gets Go's 404
(V2Ray's server answers HTTP/1 too), anything else is dropped; a connection that opens no
stream within ``FIRST_STREAM_TIMEOUT`` is closed, and either side closes one left without
streams for ``IDLE_TIMEOUT``.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import hyperframe.frame
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import H2Error, NoAvailableStreamIDError, ProtocolError
from h2.settings import SettingCodes, Settings
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vtwist.address import format_address
from vtwist.reactors import resolve_reactor
from vtwist.transport.h2.profile import Codec, Profile

log = Logger(namespace="vtwist.transport.h2")

STREAM_WINDOW = 1 << 20  # what a peer may send on one stream before we acknowledge
CONNECTION_WINDOW = 16 << 20  # the same for all streams together
MAX_FRAME = 1 << 18  # the largest frame we accept (a relayed 64 KiB read plus its framing fits)
MAX_STREAMS = 128  # concurrent streams a peer may open; a client opens at most this many
HIGH_WATER = 256 * 1024  # a stream's unsent bytes past which its producer is paused
LOW_WATER = 64 * 1024  # ... and below which it is resumed
FIRST_STREAM_TIMEOUT = 10.0  # a server closes a connection opening no stream in this time
IDLE_TIMEOUT = 300.0  # either side closes a connection without streams this long
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP1_START = re.compile(rb"[A-Z]{1,10}( |$)")
HTTP1_REQUEST = re.compile(rb"[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")
#: What Go's net/http writes for V2Ray's ``WriteHeader(404)`` (no body) to an HTTP/1 client.
HTTP1_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _quick_raw_data_repr(data: bytes | None) -> str:
    """hyperframe's ``_raw_data_repr`` with the same result, from the first bytes only.

    h2 formats ``repr(frame)`` for a trace line on every frame it receives, and hyperframe's
    version hex-encodes a whole DATA frame only to keep 20 characters of it: a tenth of a
    busy tunnel's time.
    """
    if not data:
        return "None"
    text = binascii.hexlify(data[:11]).decode("ascii")
    if len(text) > 20:
        text = text[:20] + "..."
    return "<hex:" + text + ">"


if getattr(hyperframe.frame, "_raw_data_repr", None) is not None:
    hyperframe.frame._raw_data_repr = _quick_raw_data_repr


class SendBuffer:
    """Bytes waiting to be sent, as the chunks written (no copying until a chunk is split)."""

    def __init__(self) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, data: bytes) -> None:
        """Queue ``data``."""
        self.chunks.append(data)
        self.size += len(data)

    def take(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the front (a whole chunk when it fits)."""
        chunk = self.chunks.popleft()
        if len(chunk) > limit:
            self.chunks.appendleft(chunk[limit:])
            chunk = chunk[:limit]
        self.size -= len(chunk)
        return chunk

    def clear(self) -> None:
        """Drop everything."""
        self.chunks.clear()
        self.size = 0


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def header_dict(headers: Any) -> dict[str, str]:
    """h2's header list as a dict (lower-case names; the first value of a repeated name)."""
    out: dict[str, str] = {}
    for name, value in headers or ():
        out.setdefault(_text(name).lower(), _text(value))
    return out


def forwarded_for(headers: dict[str, str]) -> IPv4Address | IPv6Address | None:
    """The first X-Forwarded-For address as a peer (port 0, as V2Ray), if valid."""
    value = headers.get("x-forwarded-for")
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value.split(",")[0].strip())
    except ValueError:
        return None
    return (IPv6Address if ip.version == 6 else IPv4Address)("TCP", str(ip), 0)


@implementer(ITransport, IConsumer, IPushProducer)
class H2Stream:
    """One HTTP/2 stream as the transport of an application protocol."""

    def __init__(self, connection: H2Protocol, stream_id: int, codec: Codec,
                 peer: Any = None) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.codec = codec
        self.peer = peer
        self.app: Any = None
        self.disconnecting = False
        self.connected = True
        self.buffer = SendBuffer()  # encoded body bytes waiting for the peer's window
        self.closing = False  # end our side once the buffer is out
        self.fullClose = False  # ... and stop the peer too
        self.localEnded = False
        self.remoteEnded = False  # the peer's END_STREAM arrived
        self.remoteEndDelivered = False
        self.paused = False  # the application paused us: deliver and acknowledge nothing
        self.pending: deque[tuple[bytes, int]] = deque()
        self._drainCall: Any = None
        self.producer: Any = None
        self.streaming = True
        self.producerPaused = False
        self.finished = False
        self.error: str | None = None  # why the stream failed (a reset, a bad trailer ...)
        #: A client's: the application's factory and the Deferred its connect returned.
        self.factory: IProtocolFactory | None = None
        self.ready: Deferred | None = None

    # -- from the connection ---------------------------------------------------------------
    def attach(self, app: Any) -> None:
        """Connect ``app`` to this stream."""
        self.app = app
        app.makeConnection(self)

    def dataFromPeer(self, data: bytes, flow: int) -> None:
        """DATA for this stream: deliver it and acknowledge, or keep it while paused."""
        if self.finished:
            self.connection.acknowledge(flow, self.stream_id)
            return
        if self.paused or self.pending or self.app is None or self._drainCall is not None:
            self.pending.append((data, flow))
            return
        self._deliver(data, flow)

    def _deliver(self, data: bytes, flow: int) -> None:
        try:
            payload = self.codec.decode(data) if data else b""
        except ValueError as e:
            self.error = f"bad {self.connection.profile.name} stream data: {e}"
            self.connection.log.info("{why} from {peer}", why=self.error,
                                     peer=self.connection.peerText())
            self.reset(ErrorCodes.PROTOCOL_ERROR)
            return
        if payload and self.app is not None:
            self.app.dataReceived(payload)
        if flow:
            self.connection.acknowledge(flow, self.stream_id)

    def endFromPeer(self) -> None:
        """The peer's END_STREAM (after any data still held)."""
        self.remoteEnded = True
        if self._drainCall is None:
            self._drain()

    def resetByPeer(self, code: int) -> None:
        """RST_STREAM: after the peer's END_STREAM a NO_ERROR/CANCEL only stops our sending;
        otherwise the stream is dead."""
        self.localEnded = True
        self.buffer.clear()
        if self.remoteEnded and code in (ErrorCodes.NO_ERROR, ErrorCodes.CANCEL):
            self._drain()
            self._maybeFinish()
            return
        try:
            name = ErrorCodes(code).name
        except ValueError:
            name = str(code)
        self.error = self.error or f"stream reset by peer ({name})"
        self.pending.clear()
        self.finish()

    def _drain(self) -> None:
        while self.pending and not self.paused and not self.finished:
            data, flow = self.pending.popleft()
            self._deliver(data, flow)
        if (self.remoteEnded and not self.pending and not self.paused
                and not self.remoteEndDelivered and not self.finished):
            self.remoteEndDelivered = True
            if self.app is not None and IHalfCloseableProtocol.providedBy(self.app):
                self.app.readConnectionLost()
                self._maybeFinish()
            else:
                self.loseConnection()

    def _maybeFinish(self) -> None:
        if self.localEnded and self.remoteEndDelivered:
            self.finish()

    def finish(self, reason: Failure | None = None) -> None:
        """The stream is over: tell the application once."""
        if self.finished:
            return
        self.finished = True
        self.connected = False
        if self._drainCall is not None and self._drainCall.active():
            self._drainCall.cancel()
        self._drainCall = None
        self.disconnecting = True
        self.buffer.clear()
        self.connection.streamFinished(self)
        if self.producer is not None:
            producer, self.producer = self.producer, None
            if self.streaming and not self.closing:
                producer.stopProducing()
        if reason is None:
            if self.error is not None:
                reason = Failure(error.ConnectionLost(self.error))
            else:
                reason = Failure(error.ConnectionDone(f"{self.connection.profile.name} "
                                                      "stream closed"))
        app, self.app = self.app, None
        if app is not None:
            app.connectionLost(reason)

    # -- sending ---------------------------------------------------------------------------
    def sent(self) -> None:
        """Some of the buffer went out (the connection calls this after a flush)."""
        if self.closing and not self.buffer and not self.localEnded and not self.finished:
            self.localEnded = True
            self.connection.endStream(self)
            if self.fullClose and not self.remoteEndDelivered:
                self.pending.clear()
                self.remoteEndDelivered = True
                self.connection.resetStream(self.stream_id, self.connection.closeCode)
            self._maybeFinish()
            return
        if (self.producer is not None and self.producerPaused
                and len(self.buffer) < LOW_WATER):
            self.producerPaused = False
            self.producer.resumeProducing()

    # -- ITransport for the application ----------------------------------------------------
    def write(self, data: bytes) -> None:
        """Queue ``data`` (encoded by the profile) and send what the windows allow."""
        if not data or self.closing or self.finished:
            return
        self.buffer.append(self.codec.encode(bytes(data)))
        self.connection.wantSend(self)
        self.connection.flush()
        if (len(self.buffer) > HIGH_WATER and self.producer is not None
                and self.streaming and not self.producerPaused):
            self.producerPaused = True
            self.producer.pauseProducing()

    def writeSequence(self, data: Any) -> None:
        """Queue several buffers as one write."""
        self.write(b"".join(data))

    def loseWriteConnection(self) -> None:
        """Half-close: end our side once buffered bytes are out; the peer may go on."""
        if self.closing or self.finished:
            return
        self.closing = True
        self.connection.wantSend(self)
        self.sent()

    def loseConnection(self) -> None:
        """Send what is buffered, end our side, and stop the peer if it still sends."""
        if self.finished:
            return
        self.disconnecting = True
        self.fullClose = True
        if not self.closing:
            self.closing = True
            self.connection.wantSend(self)
            self.sent()
        elif self.localEnded:
            if not self.remoteEndDelivered:
                self.pending.clear()
                self.remoteEndDelivered = True
                self.connection.resetStream(self.stream_id, self.connection.closeCode)
            self._maybeFinish()

    def abortConnection(self) -> None:
        """Reset the stream now."""
        self.reset(ErrorCodes.CANCEL)

    def reset(self, code: int) -> None:
        """Reset the stream with ``code`` and finish."""
        if self.finished:
            return
        self.disconnecting = True
        self.connection.resetStream(self.stream_id, code)
        # With an error (a refusal, bad data) the application is told why; else it aborted.
        self.finish(None if self.error is not None else Failure(error.ConnectionAborted()))

    def getPeer(self) -> Any:
        """The client (X-Forwarded-For when given) or the server."""
        return self.peer if self.peer is not None else self.connection.transport.getPeer()

    def getHost(self) -> Any:
        """The connection's local address."""
        return self.connection.transport.getHost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """The application's producer, paused while our buffer is over ``HIGH_WATER``."""
        self.producer = producer
        self.streaming = streaming
        self.producerPaused = False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.producer = None

    # -- IPushProducer: the application as our consumer -------------------------------------
    def pauseProducing(self) -> None:
        """Hold what arrives and acknowledge nothing: the peer stops at the window."""
        self.paused = True

    def resumeProducing(self) -> None:
        """Deliver what was held (acknowledging it), then whatever comes.

        Held bytes are delivered from the reactor, not inside this call, as a TCP transport
        would: a caller resuming us may still have bytes of its own to pass on first (the
        tunnel's held early input).
        """
        if not self.paused:
            return
        self.paused = False
        if (self.pending or self.remoteEnded) and self._drainCall is None:
            clock = resolve_reactor(self.connection.clock)
            self._drainCall = clock.callLater(0, self._drainLater)

    def _drainLater(self) -> None:
        self._drainCall = None
        self._drain()
        self.connection.writeOut()

    def stopProducing(self) -> None:
        """The consumer is gone: close."""
        self.loseConnection()

    def logPrefix(self) -> str:
        """Log lines name the profile."""
        return self.connection.profile.name


class H2Protocol(Protocol):
    """An HTTP/2 connection carrying streams for ``profile``, as a client or a server.

    A server builds one application protocol per accepted stream with ``appFactory``; a
    client opens streams with :meth:`openStream`. ``onLost(protocol)`` is called when the
    connection is gone (the client pool forgets it).
    """

    log = log

    def __init__(self, profile: Profile, client: bool, appFactory: IProtocolFactory | None = None,
                 scheme: str = "https", authority: str = "", clock: Any = None,
                 onLost: Callable[[H2Protocol], None] | None = None) -> None:
        self.profile = profile
        self.client = client
        self.appFactory = appFactory
        self.scheme = scheme
        self.authority = authority
        self.clock = clock
        self.onLost = onLost
        self.streams: dict[int, H2Stream] = {}
        self.lowerPaused = False
        self.goingAway = False
        self.gone = False
        self.everStream = False
        self._preface = b"" if not client else None  # a server's first bytes, until known
        self._timer: Any = None
        self._flushing = False
        self._again = False
        #: Streams with bytes to send or an end to say.
        self._sending: dict[int, H2Stream] = {}
        self.closeCode = ErrorCodes.CANCEL if client else ErrorCodes.NO_ERROR
        # Our own headers are constant and valid: h2 need not check them on every stream.
        self.conn = H2Connection(H2Configuration(
            client_side=client, header_encoding=None, validate_inbound_headers=True,
            validate_outbound_headers=False, normalize_outbound_headers=False))
        # Our settings are in force from the start (they go out in the first SETTINGS frame).
        # As pending updates they would apply when the peer acknowledges them, but h2 sizes
        # its frame reader once per receive_data: a peer's ACK followed in the same read by a
        # frame of the new size was refused as overlong (grpcio does exactly that).
        initial = {SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                   SettingCodes.MAX_FRAME_SIZE: MAX_FRAME,
                   SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                   SettingCodes.MAX_HEADER_LIST_SIZE: 65536}
        if client:
            initial[SettingCodes.ENABLE_PUSH] = 0
        self.conn.local_settings = Settings(client=client, initial_values=initial)
        self.conn.max_inbound_frame_size = MAX_FRAME

    # -- connection ------------------------------------------------------------------------
    def connectionMade(self) -> None:
        """A client starts HTTP/2 at once; a server once the client's preface came."""
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            try:
                no_delay(True)
            except OSError:  # pragma: no cover - not a socket
                pass
        self.transport.registerProducer(self, True)
        self._arm(FIRST_STREAM_TIMEOUT if not self.client else IDLE_TIMEOUT)
        if self.client:
            self._start()

    def _start(self) -> None:
        """Send the preface (a client's) and our settings; open the connection window."""
        self.conn.initiate_connection()
        self.conn.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.writeOut()

    def peerText(self) -> str:
        """The peer for log lines."""
        try:
            return format_address(self.transport.getPeer())
        except Exception:  # noqa: BLE001 - a transport without a peer is fine in a log line
            return "?"

    def dataReceived(self, data: bytes) -> None:
        """Frames in: dispatch h2's events to the streams."""
        if self.gone:
            return
        if self._preface is not None:
            data = self._checkPreface(data)
            if not data:
                return
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as e:
            self.log.info("HTTP/2 protocol error from {peer}: {why}", peer=self.peerText(),
                          why=str(e) or type(e).__name__)
            self.writeOut()
            self._loseTransport()
            self.gone = True
            return
        for event in events:
            self._event(event)
            if self.gone:
                return
        self.flush()

    def _event(self, event: Any) -> None:
        if isinstance(event, DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:
                self.acknowledge(event.flow_controlled_length, event.stream_id)
            else:
                stream.dataFromPeer(event.data, event.flow_controlled_length)
        elif isinstance(event, RequestReceived):
            self._request(event)
        elif isinstance(event, ResponseReceived):
            self._response(event)
        elif isinstance(event, TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                why = self.profile.check_trailers(header_dict(event.headers))
                if why:
                    stream.error = why
        elif isinstance(event, StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None and not stream.remoteEnded:
                stream.endFromPeer()
        elif isinstance(event, StreamReset):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.resetByPeer(event.error_code)
        elif isinstance(event, (WindowUpdated, RemoteSettingsChanged)):
            pass  # flush() after the batch sends what the new window allows
        elif isinstance(event, ConnectionTerminated):
            self.goingAway = True
            last = event.last_stream_id if event.last_stream_id is not None else 0
            for stream in list(self.streams.values()):
                if stream.stream_id > last:
                    stream.error = "the server is going away"
                    stream.finish()
            if not self.streams:
                self._loseTransport()

    # -- server side -----------------------------------------------------------------------
    def _checkPreface(self, data: bytes) -> bytes:
        """A server's first bytes: the HTTP/2 preface goes on to h2; an HTTP/1 request gets
        Go's answer to it (V2Ray's server answers HTTP/1 too, with 404 for a host or path not
        its own); anything else is dropped. Returns what h2 may read now."""
        seen = self._preface + data
        if PREFACE.startswith(seen[:len(PREFACE)]):
            if len(seen) < len(PREFACE):
                self._preface = seen
                return b""
            self._preface = None
            self._start()
            return seen
        if b"\n" not in seen and len(seen) < 8192 and HTTP1_START.match(seen):
            self._preface = seen  # perhaps an HTTP/1 request line: wait for all of it
            return b""
        self._preface = None
        self.gone = True
        why = "not HTTP/2"
        if HTTP1_REQUEST.match(seen):
            why = "an HTTP/1 request"
            self.transport.write(HTTP1_NOT_FOUND)
        self.log.info("{profile}: {peer} sent {why}; closing", profile=self.profile.name,
                      peer=self.peerText(), why=why)
        self._loseTransport()
        return b""

    def _request(self, event: RequestReceived) -> None:
        sid = event.stream_id
        headers = header_dict(event.headers)
        if self.client:
            self.resetStream(sid, ErrorCodes.PROTOCOL_ERROR)
            return
        answer = self.profile.accept(headers)
        if not answer.accepted:
            self.log.info("{profile} request from {peer} refused: {why}",
                          profile=self.profile.name, peer=self.peerText(), why=answer.why)
            self._send_headers(sid, answer.headers, end=True)
            if event.stream_ended is None:
                self.resetStream(sid, ErrorCodes.NO_ERROR)
            return
        self._disarm()
        self.everStream = True
        stream = H2Stream(self, sid, answer.codec, forwarded_for(headers))
        app = self.appFactory.buildProtocol(stream.getPeer()) if self.appFactory else None
        if app is None:
            self.resetStream(sid, ErrorCodes.REFUSED_STREAM)
            return
        self.streams[sid] = stream
        self._send_headers(sid, answer.headers, end=False)
        stream.attach(app)

    # -- client side -----------------------------------------------------------------------
    def canOpenStream(self) -> bool:
        """True while another stream may go on this connection."""
        if self.gone or self.goingAway or self.transport is None:
            return False
        limit = min(self.conn.remote_settings.max_concurrent_streams, MAX_STREAMS)
        return self.conn.open_outbound_streams < limit and \
            self.conn.highest_outbound_stream_id < (1 << 31) - 1024

    def openStream(self, appFactory: IProtocolFactory, ready: Deferred) -> H2Stream | None:
        """Open a stream for ``appFactory``'s protocol; ``ready`` fires with it."""
        try:
            sid = self.conn.get_next_available_stream_id()
        except NoAvailableStreamIDError:
            ready.errback(error.ConnectError("no HTTP/2 stream ids left"))
            return None
        self._disarm()
        self.everStream = True
        stream = H2Stream(self, sid, self.profile.client_codec())
        stream.factory = appFactory
        stream.ready = ready
        self.streams[sid] = stream
        self._send_headers(sid, self.profile.request_headers(self.scheme, self.authority),
                           end=False)
        if not self.profile.wait_for_response:
            self._connectApp(stream)
        self.writeOut()
        return stream

    def _connectApp(self, stream: H2Stream) -> None:
        ready = stream.ready
        stream.ready = None
        if ready.called:  # cancelled (a connect timeout) meanwhile
            stream.reset(ErrorCodes.CANCEL)
            return
        app = stream.factory.buildProtocol(self.transport.getPeer())
        if app is None:
            stream.reset(ErrorCodes.CANCEL)
            ready.errback(error.ConnectError("the application refused the connection"))
            return
        stream.attach(app)
        if not ready.called:
            ready.callback(app)
        stream._drain()

    def _response(self, event: ResponseReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        why = self.profile.check_response(header_dict(event.headers))
        ready = stream.ready
        if why is not None:
            self.log.info("{profile} stream to {peer} refused: {why}",
                          profile=self.profile.name, peer=self.peerText(), why=why)
            stream.error = why
            stream.ready = None
            stream.reset(ErrorCodes.CANCEL)
            if ready is not None and not ready.called:
                ready.errback(error.ConnectError(f"{self.profile.name}: {why}"))
            return
        if ready is not None:
            self._connectApp(stream)

    # -- sending ---------------------------------------------------------------------------
    def _send_headers(self, sid: int, headers: list[tuple[str, str]], end: bool) -> None:
        try:
            self.conn.send_headers(sid, headers, end_stream=end)
        except H2Error as e:  # pragma: no cover - a closed stream
            self.log.debug("headers on stream {sid} not sent: {e}", sid=sid, e=e)

    def wantSend(self, stream: H2Stream) -> None:
        """``stream`` has bytes to send or its end to say: the next flush looks at it."""
        self._sending[stream.stream_id] = stream

    def flush(self) -> None:
        """Send what the windows allow from the buffers of the streams with something to
        send, then write out. Writes made meanwhile (a producer resumed by this very flush)
        get another pass, so no bytes are left waiting for an event that may not come."""
        if self.gone:
            return
        if self._flushing:
            self._again = True
            return
        self._flushing = True
        try:
            conn = self.conn
            again = True
            while again:
                self._again = False
                for stream in list(self._sending.values()):
                    buffer = stream.buffer
                    while buffer and not self.lowerPaused and not stream.finished:
                        size = min(conn.local_flow_control_window(stream.stream_id),
                                   conn.max_outbound_frame_size, len(buffer))
                        if size <= 0:
                            break
                        conn.send_data(stream.stream_id, buffer.take(size))
                    if not stream.finished:
                        stream.sent()
                    if stream.finished or not (stream.buffer or stream.producerPaused or (
                            stream.closing and not stream.localEnded)):
                        self._sending.pop(stream.stream_id, None)
                again = self._again
        except H2Error as e:  # pragma: no cover - a stream closed under us
            self.log.debug("flush: {e}", e=e)
        finally:
            self._flushing = False
            self._again = False
        self.writeOut()

    def endStream(self, stream: H2Stream) -> None:
        """End our side of ``stream`` (the profile's trailers on a server)."""
        trailers = None if self.client else self.profile.end_trailers()
        try:
            if trailers:
                self.conn.send_headers(stream.stream_id, trailers, end_stream=True)
            else:
                self.conn.end_stream(stream.stream_id)
        except H2Error:
            pass
        self.writeOut()

    def resetStream(self, sid: int, code: int) -> None:
        """RST_STREAM ``sid`` (ignored when it is closed already)."""
        try:
            self.conn.reset_stream(sid, code)
        except H2Error:
            pass
        self.writeOut()

    def acknowledge(self, flow: int, sid: int) -> None:
        """Give ``flow`` bytes of window back (the application has them)."""
        if flow and not self.gone:
            try:
                self.conn.acknowledge_received_data(flow, sid)
            except H2Error:  # pragma: no cover
                pass

    def writeOut(self) -> None:
        """Write what h2 has queued."""
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.gone:
            self.transport.write(data)

    def streamFinished(self, stream: H2Stream) -> None:
        """``stream`` is over: forget it; with no streams left, start the idle timer."""
        self._sending.pop(stream.stream_id, None)
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if not self.streams:
            if self.goingAway:
                self._loseTransport()
            else:
                self._arm(IDLE_TIMEOUT)
        self.writeOut()

    # -- timers ----------------------------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        if self.gone:
            return
        self._timer = resolve_reactor(self.clock).callLater(seconds, self._idle)

    def _disarm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _idle(self) -> None:
        self._timer = None
        if self.streams or self.gone:
            return
        if not self.everStream and not self.client:
            self.log.info("{profile}: {peer} opened no stream in {t:g} s; closing",
                          profile=self.profile.name, peer=self.peerText(),
                          t=FIRST_STREAM_TIMEOUT)
        self.close()

    def close(self) -> None:
        """Say GOAWAY and close (streams still open are cut)."""
        if self.gone:
            return
        self.goingAway = True
        try:
            self.conn.close_connection()
        except H2Error:  # pragma: no cover
            pass
        self.writeOut()
        self._loseTransport()

    def _loseTransport(self) -> None:
        """Close the connection below (unregistered first: TLS waits for its producer to go
        before it shuts down)."""
        if self.transport is None:
            return
        try:
            self.transport.unregisterProducer()
        except RuntimeError:  # pragma: no cover - none registered
            pass
        self.transport.loseConnection()

    # -- the transport below as our consumer -----------------------------------------------
    def pauseProducing(self) -> None:
        """The transport's buffer is full: send no more DATA."""
        self.lowerPaused = True

    def resumeProducing(self) -> None:
        """The transport drained: send again."""
        self.lowerPaused = False
        self.flush()

    def stopProducing(self) -> None:
        """The transport is going away."""
        self.lowerPaused = True

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Every stream still open ends with the connection."""
        self.gone = True
        self._disarm()
        for stream in list(self.streams.values()):
            stream.error = stream.error or "HTTP/2 connection lost"
            stream.pending.clear()
            stream.finish()
            ready = stream.ready
            if ready is not None and not ready.called:
                ready.errback(error.ConnectError(f"{self.profile.name}: connection lost "
                                                 "before the response"))
        if self.onLost is not None:
            self.onLost(self)
