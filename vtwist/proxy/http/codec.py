"""Sans-IO HTTP proxy codec on top of h11: the client-facing server side and the
upstream (origin-facing) client side of a forward proxy.

:class:`ServerCodec` wraps an ``h11`` server connection. Feed it the client's bytes with
:meth:`ServerCodec.receive_data`; it returns :class:`ProxyRequest` (the request head with its
destination resolved), :class:`Body`, :class:`BodyEnd` and :class:`ClientClosed` events, and
raises :class:`HttpError` (a status and a reason) on bad input. Responses go out through
:meth:`ServerCodec.send_head` / :meth:`send_body` / :meth:`end_response`, framed by h11 for
the client's HTTP version (chunked, Content-Length or close-delimited).

:class:`UpstreamCodec` wraps an ``h11`` client connection for one plain forward-proxy
request: :meth:`UpstreamCodec.start` returns the rewritten request head (origin form, no
hop-by-hop or ``Proxy-*`` headers, ``Connection: close``), then the body is framed the same
way; :meth:`UpstreamCodec.receive_data` turns the origin's bytes into :class:`ResponseHead`,
:class:`Body` and :class:`ResponseEnd`, so the proxy knows where the response ends.

Header handling follows V2Ray 4.34's ``common/protocol/http.RemoveHopByHopHeaders`` (plus
``Keep-Alive`` and every ``Proxy-*`` header). No I/O, no clock.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from vtwist.address import Destination, is_valid_domain, parse_ip
from vtwist.sansio import Event

#: The largest request or response head accepted (h11's limit on an incomplete event).
MAX_HEAD = 64 * 1024

#: Hop-by-hop headers (RFC 7230 section 6.1 and V2Ray's list), lower case.
HOP_BY_HOP = frozenset((b"connection", b"keep-alive", b"te", b"trailers", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-connection",
                        b"proxy-authenticate", b"proxy-authorization"))

#: The reply to a CONNECT once the outbound is connected (V2Ray's exact bytes).
CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"

REASONS = {
    400: b"Bad Request", 405: b"Method Not Allowed", 407: b"Proxy Authentication Required",
    408: b"Request Timeout", 431: b"Request Header Fields Too Large",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}

Headers = list[tuple[bytes, bytes]]


class HttpError(Exception):
    """Bad input: answer ``status`` (when the connection can still carry an answer), log
    ``why``, close."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


# -- events --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ProxyRequest(Event):
    """A complete request head from the client, with its destination."""

    method: bytes
    target: bytes
    http_version: bytes
    headers: Headers  # raw names, as the client sent them
    destination: Destination
    connect: bool
    #: ``(user, password)`` from ``Proxy-Authorization: Basic``, or None
    credentials: tuple[str, str] | None
    #: the request target in origin form (plain requests), e.g. ``b"/a?b"``
    path: bytes
    #: the ``Host`` to send upstream (the URL's authority, or the client's Host)
    host: bytes


@dataclass(frozen=True, slots=True)
class Body(Event):
    """Body bytes (of the request from the client, or of the response from upstream)."""

    data: bytes | bytearray


@dataclass(frozen=True, slots=True)
class BodyEnd(Event):
    """The client's request body is complete."""


@dataclass(frozen=True, slots=True)
class ClientClosed(Event):
    """The client half-closed (or closed) its side."""


@dataclass(frozen=True, slots=True)
class ResponseHead(Event):
    """The origin's response head (``informational`` for 1xx)."""

    status: int
    reason: bytes
    headers: Headers
    informational: bool = False


@dataclass(frozen=True, slots=True)
class ResponseEnd(Event):
    """The origin's response is complete."""


# -- helpers -------------------------------------------------------------------------------
def parse_basic_auth(value: bytes | None) -> tuple[str, str] | None:
    """``(user, password)`` of a ``Basic`` credential, or None (as V2Ray's parseBasicAuth)."""
    if not value or not value.startswith(b"Basic "):
        return None
    try:
        decoded = base64.b64decode(value[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def basic_auth(user: str, password: str) -> bytes:
    """The ``Proxy-Authorization`` value for ``user``/``password``."""
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


def split_authority(authority: str, default_port: int | None) -> tuple[str, int]:
    """``host, port`` of ``host[:port]`` / ``[v6][:port]``; raises ValueError."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("unclosed [ in the host")
        host, rest = authority[1:end], authority[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after the IPv6 address")
        port_text = rest[1:] if rest else ""
        if parse_ip(host) is None:
            raise ValueError(f"bad IPv6 address {host!r}")
    else:
        host, sep, port_text = authority.rpartition(":")
        if not sep:
            host, port_text = authority, ""
        if ":" in host:
            raise ValueError("an IPv6 address needs brackets")
    if not host:
        raise ValueError("no host")
    if parse_ip(host) is None and not is_valid_domain(host):
        raise ValueError(f"bad host {host!r}")
    if port_text:
        if not port_text.isdigit() or len(port_text) > 5:
            raise ValueError(f"bad port {port_text!r}")
        port = int(port_text)
    elif default_port is None:
        raise ValueError("no port")
    else:
        port = default_port
    if not 0 < port <= 65535:
        raise ValueError(f"port {port} out of range")
    return host, port


def strip_hop_by_hop(headers: Headers) -> Headers:
    """``headers`` without hop-by-hop ones, the ones ``Connection`` names, and ``Proxy-*``."""
    named = set(HOP_BY_HOP)
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(v.strip().lower() for v in value.split(b",") if v.strip())
    return [(n, v) for n, v in headers
            if n.lower() not in named and not n.lower().startswith(b"proxy-")]


def error_response(status: int, extra: Headers = ()) -> bytes:  # type: ignore[assignment]
    """A complete ``status`` response that closes the connection (no body)."""
    lines = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, b"Error"))]
    lines.extend(n + b": " + v for n, v in extra)
    lines += [b"Content-Length: 0", b"Connection: close", b"Proxy-Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


AUTH_REQUIRED = error_response(407, [(b"Proxy-Authenticate", b'Basic realm="proxy"')])


def _status_for(error: h11.ProtocolError) -> int:
    hint = getattr(error, "error_status_hint", 400)
    return 431 if hint == 431 else 400


# -- the client-facing side ------------------------------------------------------------------
class ServerCodec:
    """The proxy's side of one client connection (any number of requests)."""

    def __init__(self, allow_transparent: bool = False, max_head: int = MAX_HEAD) -> None:
        self.allow_transparent = allow_transparent
        self.max_head = max_head
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.requests = 0

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed the client's bytes (``b""`` for its EOF); the events they complete.

        Stops after a request's end until the response is done (:meth:`next_cycle`).
        """
        conn = self.h11
        try:
            conn.receive_data(data)
        except RuntimeError:  # data after the client closed: nothing more to parse
            return []
        return self.events()

    def events(self) -> list[Event]:
        """The events the bytes already fed complete."""
        conn = self.h11
        out: list[Event] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                raise HttpError(_status_for(e), f"bad request: {e}") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return out
            if isinstance(event, h11.Request):
                self.requests += 1
                out.append(self._request(event))
            elif isinstance(event, h11.Data):
                out.append(Body(event.data))
            elif isinstance(event, h11.EndOfMessage):
                out.append(BodyEnd())
            elif isinstance(event, h11.ConnectionClosed):
                out.append(ClientClosed())
                return out

    def _request(self, request: h11.Request) -> ProxyRequest:
        if request.http_version not in (b"1.0", b"1.1"):
            raise HttpError(400, f"unsupported HTTP version {request.http_version!r}")
        method = request.method.upper()
        target = request.target
        headers = list(request.headers.raw_items())
        # h11 bounds a head that arrives in pieces; one that arrives whole is measured here.
        size = len(request.method) + len(request.target) + 12 + sum(
            len(n) + len(v) + 4 for n, v in headers)
        if size > self.max_head:
            raise HttpError(431, f"request head of {size} bytes is over {self.max_head}")
        host_header = next((v for n, v in headers if n.lower() == b"host"), b"")
        credentials = parse_basic_auth(
            next((v for n, v in headers if n.lower() == b"proxy-authorization"), None))
        try:
            text = target.decode("ascii")
        except UnicodeDecodeError:
            raise HttpError(400, "non-ASCII request target") from None
        if method == b"CONNECT":
            try:
                host, port = split_authority(text, None)
            except ValueError as e:
                raise HttpError(400, f"bad CONNECT target {text!r}: {e}") from None
            return ProxyRequest(method, target, request.http_version, headers,
                                Destination.tcp(host, port), True, credentials, b"", target)
        if text.startswith("/") or text == "*":
            if not self.allow_transparent:
                raise HttpError(400, f"not a proxy request (origin-form target {text[:80]!r})")
            authority, default_port, path = host_header.decode("latin-1"), 80, target
        else:
            try:
                url = urlsplit(text)
            except ValueError as e:  # e.g. "Invalid IPv6 URL" for an unclosed "["
                raise HttpError(400, f"bad URL {text[:80]!r}: {e}") from None
            scheme = url.scheme.lower()
            if scheme not in ("http", "https"):
                raise HttpError(400, f"unsupported URL scheme {url.scheme!r}")
            authority = url.netloc.rpartition("@")[2]
            default_port = 443 if scheme == "https" else 80
            try:
                path = (url.path or "/").encode("ascii")
                if url.query:
                    path += b"?" + url.query.encode("ascii")
            except UnicodeEncodeError:
                raise HttpError(400, f"non-ASCII URL {text[:80]!r}") from None
        if not authority:
            raise HttpError(400, f"no host in {text[:80]!r}")
        try:
            host, port = split_authority(authority, default_port)
        except ValueError as e:
            raise HttpError(400, f"bad host {authority!r}: {e}") from None
        return ProxyRequest(method, target, request.http_version, headers,
                            Destination.tcp(host, port), False, credentials, path,
                            authority.encode("ascii", "replace"))

    # -- answers --------------------------------------------------------------------------
    def take_trailing_data(self) -> bytes:
        """After a CONNECT's head: the bytes the client sent beyond it (its first payload)."""
        return bytes(self.h11.trailing_data[0])

    @property
    def mid_request(self) -> bool:
        """True when part of a request head has arrived (the handshake clock matters)."""
        return bool(self.h11.trailing_data[0]) or self.h11.their_state is not h11.IDLE

    def send_head(self, head: ResponseHead) -> bytes:
        """The response head (hop-by-hop headers stripped; h11 adds the framing)."""
        headers = strip_hop_by_hop(head.headers)
        if head.informational:
            return self.h11.send(h11.InformationalResponse(
                status_code=head.status, headers=headers, reason=head.reason))
        return self.h11.send(h11.Response(status_code=head.status, headers=headers,
                                          reason=head.reason))

    def send_body(self, data: bytes | bytearray) -> bytes:
        """Response body bytes, framed."""
        return self.h11.send(h11.Data(data=data)) or b""

    def end_response(self) -> bytes:
        """The end of the response (the last chunk for chunked framing)."""
        return self.h11.send(h11.EndOfMessage()) or b""

    def can_send_error(self) -> bool:
        """True when no response has started yet (an error status can still go out)."""
        return self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    def next_cycle(self) -> bool:
        """After a response: True (and ready for the next request) if the connection may
        carry another one, False if it must close."""
        conn = self.h11
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
            return True
        return False


# -- the origin-facing side ------------------------------------------------------------------
class UpstreamCodec:
    """One plain request to the origin and its response (the connection then closes)."""

    def __init__(self, request: ProxyRequest, max_head: int = MAX_HEAD) -> None:
        self.request = request
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head)

    def start(self) -> bytes:
        """The rewritten request head: origin form, Host from the URL, no hop-by-hop or
        ``Proxy-*`` headers, ``Connection: close``, framing as the client sent it."""
        request = self.request
        chunked = any(n.lower() == b"transfer-encoding" and b"chunked" in v.lower()
                      for n, v in request.headers)
        headers = [(b"Host", request.host)]
        headers += [(n, v) for n, v in strip_hop_by_hop(request.headers)
                    if n.lower() != b"host"]
        if chunked:
            headers = [(n, v) for n, v in headers if n.lower() != b"content-length"]
            headers.append((b"Transfer-Encoding", b"chunked"))
        headers.append((b"Connection", b"close"))
        return self.h11.send(h11.Request(method=request.method, target=request.path,
                                         headers=headers, http_version=b"1.1")) or b""

    def send_body(self, data: bytes | bytearray) -> bytes:
        """Request body bytes, framed for the origin."""
        return self.h11.send(h11.Data(data=data)) or b""

    def end_body(self) -> bytes:
        """The end of the request body."""
        return self.h11.send(h11.EndOfMessage()) or b""

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Feed the origin's bytes (``b""`` for its EOF); the events they complete.

        Raises :class:`HttpError` (502) when the response is malformed or cut short.
        """
        conn = self.h11
        try:
            conn.receive_data(data)
        except RuntimeError:
            return []
        out: list[Event] = []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                if not data:
                    raise HttpError(502, "the origin closed before its response ended") \
                        from None
                raise HttpError(502, f"bad response from the origin: {e}") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return out
            if isinstance(event, (h11.Response, h11.InformationalResponse)):
                out.append(ResponseHead(
                    event.status_code, event.reason,
                    list(event.headers.raw_items()),
                    isinstance(event, h11.InformationalResponse)))
            elif isinstance(event, h11.Data):
                out.append(Body(event.data))
            elif isinstance(event, h11.EndOfMessage):
                out.append(ResponseEnd())
                return out
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpError(502, "the origin closed before its response ended")
