"""Sans-IO HTTP ``CONNECT`` client: the request V2Ray 4.34's http outbound sends, and its
answer parsed with h11.

:class:`ConnectClient` gives the request bytes (:meth:`~ConnectClient.request`), takes the
proxy's bytes (:meth:`~ConnectClient.receive_data`) and returns
:data:`~vtwist.sansio.NEED_DATA` until the response head is complete, then a
:class:`Established` (the tunnel is open; bytes after the head are its ``trailing``) or a
:class:`Refused` (any status but 200, as in V2Ray; ``status_line`` quotes it). A response that
is not HTTP raises :class:`ConnectError`.

The request is Go's ``http.Request.Write`` of V2Ray's CONNECT::

    CONNECT example.com:443 HTTP/1.1
    Host: example.com:443
    User-Agent: Go-http-client/1.1
    Proxy-Authorization: Basic YWxpY2U6czNjcmV0     (with an account)
    Proxy-Connection: Keep-Alive
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import h11

from vtwist.sansio import NEED_DATA, Event, NeedData

#: What Go's HTTP client calls itself (V2Ray sets no User-Agent of its own).
USER_AGENT = "Go-http-client/1.1"

#: The largest response head accepted (h11's limit on an incomplete event).
MAX_HEAD_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Established(Event):
    """The proxy answered 200: the tunnel is open; ``trailing`` already belongs to it."""

    status_line: str
    trailing: bytes = b""


@dataclass(frozen=True, slots=True)
class Refused(Event):
    """The proxy answered something other than 200 (``status``, e.g. 407)."""

    status: int
    status_line: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


class ConnectError(Exception):
    """The proxy's answer is not an HTTP response (or the connection ended before one)."""


def basic_credentials(user: str, password: str) -> str:
    """The ``Proxy-Authorization`` value for ``user:password`` (Basic, base64)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def connect_headers(target: str, credentials: tuple[str, str] | None = None
                    ) -> list[tuple[str, str]]:
    """The headers of V2Ray's CONNECT to ``target`` (``host:port``), in Go's order."""
    headers = [("Host", target), ("User-Agent", USER_AGENT)]
    if credentials is not None:
        headers.append(("Proxy-Authorization", basic_credentials(*credentials)))
    headers.append(("Proxy-Connection", "Keep-Alive"))
    return headers


def _status_line(response: h11.Response | h11.InformationalResponse) -> str:
    version = response.http_version.decode("ascii", "replace")
    reason = response.reason.decode("latin-1")
    return f"HTTP/{version} {response.status_code} {reason}".rstrip()


class ConnectClient:
    """One ``CONNECT`` to ``target`` (``host:port``, IPv6 in brackets), sans-IO."""

    def __init__(self, target: str, credentials: tuple[str, str] | None = None) -> None:
        self.target = target
        self.credentials = credentials
        self._conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.result: Established | Refused | None = None

    def request(self) -> bytes:
        """The request bytes (call once, first)."""
        conn = self._conn
        try:
            data = conn.send(h11.Request(method="CONNECT", target=self.target,
                                         headers=connect_headers(self.target,
                                                                 self.credentials)))
        except h11.LocalProtocolError as e:
            raise ConnectError(f"cannot send CONNECT {self.target!r}: {e}") from None
        return (data or b"") + (conn.send(h11.EndOfMessage()) or b"")

    def receive_data(self, data: bytes) -> Established | Refused | NeedData:
        """Take the proxy's bytes (``b""`` for the end of the connection); the outcome once
        the response head is complete, else NEED_DATA."""
        if self.result is not None:
            return self.result
        conn = self._conn
        conn.receive_data(data)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                if not data:
                    raise ConnectError("the proxy closed the connection before its "
                                       "response") from None
                raise ConnectError(f"bad response from the proxy: {e}") from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectError("the proxy closed the connection before its response")
            if isinstance(event, h11.InformationalResponse):
                continue  # 1xx: the real answer follows
            if isinstance(event, h11.Response):
                line = _status_line(event)
                if event.status_code == 200:
                    trailing, _closed = conn.trailing_data
                    self.result = Established(line, bytes(trailing))
                else:
                    self.result = Refused(event.status_code, line, tuple(event.headers))
                return self.result
            raise ConnectError(f"unexpected {type(event).__name__} from the proxy")
