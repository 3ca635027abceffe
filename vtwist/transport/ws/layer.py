"""The WebSocket layer: server/client endpoint wrappers and its ``IStreamLayer``.

The server reads the request with h11 (wsproto judges unusual upgrades), the client's upgrade
is :mod:`.client_upgrade`'s, and frames after it are :mod:`.frames`'.

Like V2Ray 4.34 (gorilla/websocket): binary messages carry the stream (any message type is
accepted on receive) and each write is one message. The server answers only GET upgrades on
its ``path`` (query ignored), echoes the first offered subprotocol, and gives a plain HTTP 404
for other paths and 400 for anything that is not a valid upgrade. Closing sends close code 1000
and drops the TCP connection. There is no half-close in WebSocket, so these transports have no
``loseWriteConnection``. The server's ``getPeer()`` reports the first ``X-Forwarded-For``
address when there is one, as V2Ray does. :data:`WEBSOCKET` is the ``IStreamLayer``.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

import h11
from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IProtocolFactory,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from wsproto.connection import ConnectionType
from wsproto.events import (
    AcceptConnection,
    Request,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import ProtocolError, split_comma_header
from zope.interface import implementer

from vtwist.entropy import POOL
from vtwist.interfaces import IStreamLayer
from vtwist.reactors import resolve_reactor
from vtwist.transport.forwarded import forwarded_peer
from vtwist.transport.layer import Layer, LayerClientEndpoint, LayerServerEndpoint
from vtwist.transport.ws.client_upgrade import (
    Refused,
    read_upgrade_response,
    request_around_key,
    upgrade_request,
)
from vtwist.transport.ws.frames import (
    BINARY,
    CLOSE,
    DATA,
    ERROR,
    PING,
    PONG,
    FrameDecoder,
    close_frame,
    encode_frame,
)
from vtwist.transport.ws.http import (
    accept_response,
    bad_request,
    decode_early_data,
    encode_early_data,
    host_header,
    http_response,
    plain_upgrade,
    read_request_head,
    usual_upgrade,
    valid_key,
)
from vtwist.transport.ws.settings import EARLY_DATA_PROTOCOL_HEADER, MAX_EARLY_DATA, WSSettings

log = Logger(namespace="vtwist.transport.ws")

SERVER_HANDSHAKE_TIMEOUT = 4.0  # V2Ray's upgrader HandshakeTimeout / ReadHeaderTimeout
CLIENT_HANDSHAKE_TIMEOUT = 8.0  # V2Ray's dialer HandshakeTimeout
#: An upgrade request's header limit: 8 KiB, plus room for the largest early data.
MAX_REQUEST_BYTES = 8192 + (MAX_EARLY_DATA * 4 + 2) // 3
#: Early data: wait this long for the application's first write before upgrading without.
EARLY_DATA_WAIT = 0.2
#: Bytes the application may write while the upgrade is under way before it is paused.
MAX_PENDING_BYTES = 256 * 1024


#: The process's random byte pool (vtwist.entropy): a client's masking keys (4 bytes a frame)
#: and Sec-WebSocket-Key (16) without a ``getrandom`` call each (RFC 6455 5.3 asks for keys
#: from a strong source of entropy: they still are).
RANDOM = POOL


def b64encode(data: bytes) -> bytes:
    """Standard base64 without a newline (``base64.b64encode`` without its wrapper)."""
    return b2a_base64(data, newline=False)


def _forwarded_for(headers: list[tuple[bytes, bytes]]) -> IPv4Address | IPv6Address | None:
    """The first X-Forwarded-For address as a peer address (port 0, as V2Ray), if valid."""
    for name, value in headers:
        if name.lower() == b"x-forwarded-for":
            return forwarded_peer(value)
    return None


# -- the stream part, common to both sides -------------------------------------------------
class _WSLayer(Layer):
    """After the upgrade: binary messages <-> stream bytes, ping/pong, close codes
    (:mod:`.frames`; the client masks its frames)."""

    name = "ws"
    log = log
    masking = False
    frames: FrameDecoder | None = None
    closeSent = False
    closeCode: int | None = None
    protocolError: str | None = None

    def streamData(self, data: bytes) -> None:
        """Frames in: deliver message bytes, answer pings, handle close."""
        assert self.frames is not None
        for kind, value in self.frames.feed(data):
            if kind == DATA:
                if self.app is not None and value:
                    self.app.dataReceived(value)
            elif kind == PING:
                if not self.closeSent:
                    self.transport.write(self._frame(PONG, value))
            elif kind == CLOSE:
                self._closed(*value)
            elif kind == ERROR:
                self._broken(*value)

    def _frame(self, opcode: int, payload: bytes) -> bytes:
        return encode_frame(opcode, payload, self._mask())

    def _broken(self, code: int, why: str) -> None:
        """The peer's frames could not be decoded: close with ``code``."""
        self.protocolError = why
        self.closeCode = code
        self.log.info("ws connection with {peer} broken: {why} (closing with {code})",
                      peer=self._peerText(), why=why, code=code)
        self.disconnecting = True
        if not self.closeSent:
            self.closeSent = True
            self._closeWith(close_frame(code, "", self._mask()))
        else:
            self.transport.loseConnection()

    def _closed(self, code: int, reason: str) -> None:
        """The peer's close: answer it (unless ours went first), then drop the connection."""
        self.closeCode = code
        self.disconnecting = True
        if not self.closeSent:
            self.closeSent = True
            self._closeWith(close_frame(code, reason, self._mask()))
        else:
            self.transport.loseConnection()

    def _closeWith(self, frame: bytes) -> None:
        """Send ``frame`` and drop the connection: in one write below over TLS."""
        close = getattr(self.transport, "closeWith", None)
        if close is not None:
            close(frame)
            return
        self.transport.write(frame)
        self.transport.loseConnection()

    def _mask(self) -> bytes | None:
        return RANDOM.take(4) if self.masking else None

    def lostReason(self, reason: Failure) -> Failure:
        """A close with 1000 (or no code) is a clean end; other codes are errors."""
        if self.protocolError is not None:
            return Failure(error.ConnectionLost(f"websocket protocol error: {self.protocolError}"))
        if self.closeCode is None:
            return reason
        if self.closeCode in (1000, 1005):
            return Failure(error.ConnectionDone("websocket closed"))
        return Failure(error.ConnectionLost(f"websocket closed with code {self.closeCode}"))

    def write(self, data: bytes) -> None:
        """One binary message per write."""
        if not data or self.frames is None or self.closeSent:
            return
        self.transport.write(encode_frame(BINARY, data,
                                          RANDOM.take(4) if self.masking else None))

    def writeSequence(self, data: Any) -> None:
        """One binary message for the lot."""
        self.write(b"".join(data))

    def closeWith(self, data: bytes) -> None:
        """``write(data)`` then ``loseConnection()``: the message, the close frame and, over
        TLS, the close_notify in one write below."""
        if self.disconnecting:
            return
        if not data or self.frames is None or self.closeSent:
            self.write(data)
            self.loseConnection()
            return
        self.disconnecting = True
        self.closeSent = True
        self._closeWith(self._frame(BINARY, data) + close_frame(1000, "", self._mask()))

    def closeLayer(self) -> None:
        """Close code 1000, then drop the connection (as V2Ray does)."""
        if self.frames is not None and not self.closeSent:
            self.closeSent = True
            self._closeWith(close_frame(1000, "", self._mask()))
            return
        self.transport.loseConnection()


class WSServerLayer(_WSLayer):
    """Server: answers the upgrade on the configured path, HTTP errors otherwise."""

    handshakeTimeout = SERVER_HANDSHAKE_TIMEOUT

    def __init__(self, factory: IProtocolFactory, settings: WSSettings,
                 clock: Any = None) -> None:
        super().__init__(factory, None, clock)
        self.settings = settings
        self.http: h11.Connection | None = None  # only for requests read_request_head leaves
        self.head = b""
        self.received = 0
        self.forwardedFor: IPv4Address | IPv6Address | None = None

    def handshakeData(self, data: bytes) -> None:
        """Read the request (plain ones directly, others with h11); check the path, then the
        upgrade (plain ones directly, others with wsproto)."""
        self.received += len(data)
        if self.http is None:
            if self.head:
                data = self.head + data
            usual = usual_upgrade(data)
            if usual is not None and self._upgradeUsual(*usual):
                return
            head = read_request_head(data)
            if head is None:
                if self.received > MAX_REQUEST_BYTES:
                    self._tooLong()
                else:
                    self.head = data
                return
            self.head = b""
            if head is not False:
                self._upgrade(*head)  # type: ignore[misc]
                return
            self.http = h11.Connection(h11.SERVER)
        self.http.receive_data(data)
        try:
            event = self.http.next_event()
        except h11.RemoteProtocolError as e:
            self.handshakeFailed(f"bad HTTP request: {e}",
                                 http_response(400, [("Connection", "close")]))
            return
        if event is h11.NEED_DATA:
            if self.received > MAX_REQUEST_BYTES:
                self._tooLong()
            return
        if not isinstance(event, h11.Request):
            self.handshakeFailed("bad HTTP request", http_response(400))
            return
        leftover = self.http.trailing_data[0]
        self.http = None
        self._upgrade(event.method, event.target, list(event.headers), leftover)

    def _tooLong(self) -> None:
        self.handshakeFailed(f"request header longer than {MAX_REQUEST_BYTES} bytes",
                             http_response(431))

    def _upgrade(self, method: bytes, raw_target: bytes, headers: list[tuple[bytes, bytes]],
                 leftover: bytes) -> None:
        """The request is read: check the path, then answer the upgrade."""
        target = raw_target.decode("latin-1")
        path = unquote(target.split("?", 1)[0])
        early_in_path: bytes | None = None
        if path != self.settings.path:
            early_in_path = self._earlyDataInPath(target)
            if early_in_path is None:
                self.handshakeFailed(f"request for {target!r}, not {self.settings.path!r}",
                                     http_response(404))
                return
        if method != b"GET":
            self.handshakeFailed(f"{method.decode('latin-1')} is not a WebSocket upgrade",
                                 http_response(405, [("Sec-Websocket-Version", "13")],
                                               b"Method Not Allowed\n"))
            return
        handshake: H11Handshake | None = None
        offered = plain_upgrade(raw_target, headers)  # the common case, answered fast
        if offered is None:
            handshake = H11Handshake(ConnectionType.SERVER)
            try:
                handshake.initiate_upgrade_connection(headers, raw_target)
                request = next(handshake.events())
            except (ProtocolError, h11.ProtocolError, UnicodeError) as e:
                # wsproto decodes header values as ASCII/IDNA and re-sends the request through
                # h11 (an HTTP/1.0 request without Host): any of these is a bad upgrade
                self.handshakeFailed(f"not a WebSocket upgrade: {e}", bad_request())
                return
            assert isinstance(request, Request)
            offered = request.subprotocols
        key = dict((k.lower(), v) for k, v in headers).get(b"sec-websocket-key", b"")
        if not valid_key(key):
            self.handshakeFailed(f"bad Sec-WebSocket-Key {key[:40]!r}", bad_request())
            return
        self.forwardedFor = _forwarded_for(headers)
        # Echo the first offered subprotocol: clients that offer one refuse an answer without
        # it (V2Ray 4.34 offers none; Xray and v2fly put early data there).
        subprotocol = offered[0] if offered else None
        early = early_in_path or self._earlyDataInHeaders(headers)
        if handshake is None:
            answer = accept_response(key, subprotocol)
        else:
            answer = handshake.send(AcceptConnection(subprotocol=subprotocol))
        self._accept(answer, early, leftover)

    def _upgradeUsual(self, target: bytes, fields: dict[bytes, bytes], leftover: bytes) -> bool:
        """The fast path (:func:`~vtwist.transport.ws.http.usual_upgrade`'s request): answer
        it when it asks for the configured path (no query, no escapes needed) with a valid key;
        False leaves it to the full path."""
        if target.decode("ascii") != self.settings.path or b"%" in target:
            return False
        key = fields[b"sec-websocket-key"]
        if not valid_key(key):
            return False
        forwarded = fields.get(b"x-forwarded-for")
        if forwarded is not None:
            self.forwardedFor = forwarded_peer(forwarded)
        protocols = fields.get(b"sec-websocket-protocol")
        subprotocol = split_comma_header(protocols)[0] if protocols is not None else None
        early = self._earlyDataInHeaders(fields.items()) if protocols is not None \
            or self.settings.early_data_header else None
        self._accept(accept_response(key, subprotocol), early, leftover)
        return True

    def _accept(self, answer: bytes, early: bytes | None, leftover: bytes) -> None:
        """Send the 101 ``answer``, connect the application, hand it the early data and the
        first frames."""
        self.transport.write(answer)
        self.frames = FrameDecoder(client=False)
        self.handshakeDone()
        if early and self.app is not None and not self.disconnecting:
            self.app.dataReceived(early)
        if leftover and self.app is not None and not self.disconnecting:
            self.streamData(leftover)

    def _earlyDataInPath(self, target: str) -> bytes | None:
        """v2fly's form (``maxEarlyData`` without a header name): base64 after the path."""
        settings = self.settings
        if not settings.max_early_data or settings.early_data_header:
            return None
        if not target.startswith(settings.path):
            return None
        return decode_early_data(target[len(settings.path):].encode("latin-1"))

    def _earlyDataInHeaders(self, headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
        """Early data in the configured header, or in Sec-WebSocket-Protocol (as Xray's
        server takes it whatever its settings say, so ``?ed=`` links work against it)."""
        wanted = {EARLY_DATA_PROTOCOL_HEADER.lower().encode()}
        if self.settings.early_data_header:
            wanted.add(self.settings.early_data_header.lower().encode())
        for name, value in headers:
            if name.lower() in wanted:
                data = decode_early_data(value.split(b",")[0])
                if data:
                    return data
        return None

    def getPeer(self) -> Any:
        """The X-Forwarded-For client when given (port 0, as V2Ray), else the real peer."""
        if self.forwardedFor is not None:
            return self.forwardedFor
        return self.transport.getPeer()


class WSClientLayer(_WSLayer):
    """Client: sends the upgrade (path, Host, headers) and waits for 101."""

    handshakeTimeout = CLIENT_HANDSHAKE_TIMEOUT
    masking = True

    def __init__(self, factory: IProtocolFactory, ready: Deferred | None, host_header: str,
                 settings: WSSettings, clock: Any = None) -> None:
        super().__init__(factory, ready, clock)
        self.settings = settings
        self.hostHeader = settings.host or host_header
        self.key = b""  # Sec-WebSocket-Key, once the request is sent
        self.offered: str | None = None  # the Sec-WebSocket-Protocol offered (early data)
        self.response = b""  # the answer's head so far
        # Early data: the application is connected before the upgrade, its first write
        # rides in the request, and what it writes until the answer waits here.
        self.requestSent = False
        self.pending: list[bytes] = []
        self.pendingBytes = 0
        self.pausedProducer: Any = None
        self.appProducer: Any = None
        self.earlyOffered = b""
        self.closeAfterUpgrade = False
        self.upgradeError: str | None = None
        self._earlyTimer: Any = None

    def handshakeStarted(self) -> None:
        """Send the upgrade request, or (early data) connect the application first."""
        if not self.settings.max_early_data:
            self._sendRequest(b"")
            return
        if not self.connectApplication():
            return
        if not self.requestSent and not self.failed:
            clock = resolve_reactor(self.clock)
            self._earlyTimer = clock.callLater(EARLY_DATA_WAIT, self._sendWithoutEarlyData)

    def _sendWithoutEarlyData(self) -> None:
        self._earlyTimer = None
        if not self.requestSent and not self.failed:
            self._sendRequest(b"")

    def _sendRequest(self, early: bytes) -> None:
        """The upgrade request, carrying ``early`` (base64) as the settings say."""
        self.requestSent = True
        if self._earlyTimer is not None and self._earlyTimer.active():
            self._earlyTimer.cancel()
        self._earlyTimer = None
        settings = self.settings
        target = settings.path
        headers = settings.headers
        if early:
            encoded = encode_early_data(early)
            header = settings.early_data_header
            if not header:
                target += encoded
            elif header.lower() == EARLY_DATA_PROTOCOL_HEADER.lower():
                self.offered = encoded
                self.earlyOffered = early
            else:
                headers = [*headers, (header, encoded)]
        self.key = key = b64encode(RANDOM.take(16))
        try:
            if early:
                request = upgrade_request(target, self.hostHeader, key, headers, self.offered)
            else:
                head, tail = request_around_key(target, self.hostHeader, headers)
                request = head + key + tail
        except ValueError as e:
            self.upgradeFailed(f"cannot send the upgrade request: {e}")
            return
        self.transport.write(request)

    def handshakeData(self, data: bytes) -> None:
        """Wait for 101 Switching Protocols (checked by :mod:`.client_upgrade`)."""
        if not self.requestSent:
            self.upgradeFailed("the server spoke before the upgrade request")
            return
        if self.response:
            data = self.response + data
        answer = read_upgrade_response(data, self.key, self.offered)
        if answer is None:
            self.response = data
            return
        self.response = b""
        if isinstance(answer, Refused):
            if answer.status is not None:
                self.upgradeFailed(f"server answered HTTP {answer.status} to the upgrade of"
                                   f" {self.settings.path!r}")
            else:
                self.upgradeFailed(f"bad upgrade response: {answer.reason}")
            return
        self.frames = FrameDecoder(client=True)
        if self.earlyOffered and answer.subprotocol is None:
            # No echo: a server without early data (V2Ray 4.34) took the header for a
            # subprotocol offer and dropped it. Send the bytes as a message.
            self.pending.insert(0, self.earlyOffered)
        self.earlyOffered = b""
        if self.app is None:
            self.handshakeDone()
        else:
            self._cancelTimer()
            self._flushPending()
        if answer.leftover and self.app is not None and not self.disconnecting:
            self.streamData(answer.leftover)

    def upgradeFailed(self, why: str, abort: bool = False) -> None:
        """The upgrade did not happen: fail the connect (or, with early data, the app)."""
        self.upgradeError = why
        self.handshakeFailed(why, abort=abort)

    def streamData(self, data: bytes) -> None:
        """With early data the application is up before the answer: finish the upgrade."""
        if self.frames is None:
            if not self.failed:
                self.handshakeData(data)
            return
        super().streamData(data)

    def _timedOut(self) -> None:
        self._timer = None
        if self.frames is None and not self.failed:
            self.upgradeFailed(f"no handshake within {self.handshakeTimeout:g} s", abort=True)

    def lostReason(self, reason: Failure) -> Failure:
        """A refused upgrade (early data: the application was already connected) says so."""
        if self.upgradeError is not None:
            return Failure(error.ConnectionLost(f"ws upgrade failed: {self.upgradeError}"))
        return super().lostReason(reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Drop the early-data timer too."""
        if self._earlyTimer is not None and self._earlyTimer.active():
            self._earlyTimer.cancel()
        self._earlyTimer = None
        super().connectionLost(reason)

    # -- the application's writes while the upgrade is under way -----------------
    def write(self, data: bytes) -> None:
        """Before the answer: the first bytes ride in the request, the rest wait."""
        if self.frames is not None or self.failed or not data:
            super().write(data)
            return
        if not self.requestSent:
            limit = self.settings.max_early_data
            self._sendRequest(data[:limit])
            data = data[limit:]
            if not data:
                return
        self.pending.append(data)
        self.pendingBytes += len(data)
        if self.pendingBytes > MAX_PENDING_BYTES and self.pausedProducer is None:
            producer = self.appProducer
            if producer is not None:
                self.pausedProducer = producer
                producer.pauseProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Remember the application's producer (to pause it while the upgrade is slow)."""
        self.appProducer = producer if streaming else None
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Forget the application's producer."""
        self.appProducer = None
        super().unregisterProducer()

    def writeSequence(self, data: Any) -> None:
        """One message for the lot (or early data, before the answer)."""
        self.write(b"".join(data))

    def _flushPending(self) -> None:
        pending, self.pending, self.pendingBytes = self.pending, [], 0
        if pending:
            super().write(b"".join(pending))
        producer, self.pausedProducer = self.pausedProducer, None
        if producer is not None:
            producer.resumeProducing()
        if self.closeAfterUpgrade:
            super().closeLayer()

    def closeLayer(self) -> None:
        """Closing before the answer: send what waits once the upgrade is done."""
        if self.frames is None and self.requestSent and not self.failed:
            self.closeAfterUpgrade = True
            return
        super().closeLayer()


def WebSocketServerEndpoint(endpoint: IStreamServerEndpoint, settings: WSSettings,
                            clock: Any = None) -> IStreamServerEndpoint:
    """``endpoint`` (tcp, or tls) serving WebSocket on ``settings.path``."""
    return LayerServerEndpoint(endpoint, lambda f: WSServerLayer(f, settings, clock))


def WebSocketClientEndpoint(endpoint: IStreamClientEndpoint, host: str, port: int,
                            settings: WSSettings, secure: bool = False,
                            clock: Any = None) -> IStreamClientEndpoint:
    """``endpoint`` (tcp, or tls when ``secure``) upgraded to WebSocket."""
    header = host_header(host, port, secure)
    return LayerClientEndpoint(
        endpoint, lambda f, ready: WSClientLayer(f, ready, header, settings, clock))


# -- the IStreamLayer (vtwist.transport.stack, through the registry) -----------------------
@implementer(IStreamLayer)
class WebSocketLayer:
    """WebSocket above TCP (and TLS), as ``wsSettings`` says."""

    name = "ws"

    def wrapServer(self, endpoint: IStreamServerEndpoint, settings: Any) -> IStreamServerEndpoint:
        """``endpoint`` serving WebSocket on the configured path."""
        return WebSocketServerEndpoint(endpoint,
                                       settings.network_settings.get("ws") or WSSettings())

    def wrapClient(self, endpoint: IStreamClientEndpoint, settings: Any, host: str, port: int,
                   reactor: Any = None) -> IStreamClientEndpoint:
        """``endpoint`` upgraded to WebSocket (Host from ``host:port`` unless configured)."""
        return WebSocketClientEndpoint(endpoint, host, port,
                                       settings.network_settings.get("ws") or WSSettings(),
                                       secure=settings.security == "tls")


#: The ws network's layer (its registry entry names it).
WEBSOCKET = WebSocketLayer()
