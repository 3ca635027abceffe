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

import re
from collections.abc import Callable
from typing import Any

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
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocolFactory,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from vtwist.address import format_address
from vtwist.reactors import resolve_reactor
from vtwist.transport.h2 import framerepr
from vtwist.transport.h2.headers import forwarded_for, header_dict
from vtwist.transport.h2.profile import Profile
from vtwist.transport.h2.stream import H2Stream

framerepr.install()

log = Logger(namespace="vtwist.transport.h2")

STREAM_WINDOW = 1 << 20  # what a peer may send on one stream before we acknowledge
CONNECTION_WINDOW = 16 << 20  # the same for all streams together
MAX_FRAME = 1 << 18  # the largest frame we accept (a relayed 64 KiB read plus its framing fits)
MAX_STREAMS = 128  # concurrent streams a peer may open; a client opens at most this many
FIRST_STREAM_TIMEOUT = 10.0  # a server closes a connection opening no stream in this time
IDLE_TIMEOUT = 300.0  # either side closes a connection without streams this long
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP1_START = re.compile(rb"[A-Z]{1,10}( |$)")
HTTP1_REQUEST = re.compile(rb"[A-Z]{3,10} \S+ HTTP/1\.[01]\r?\n")
#: What Go's net/http writes for V2Ray's ``WriteHeader(404)`` (no body) to an HTTP/1 client.
HTTP1_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


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
