"""What a tunnel over HTTP/2 streams says and checks (sans-IO): the request a client opens a
stream with, the server's answer, and how stream bytes become message bytes and back.

The HTTP/2 connection (:mod:`vtwist.transport.h2.connection`) is the same for every tunnel
over it; a :class:`Profile` is what differs. :class:`HTTPProfile` is V2Ray 4.34's ``http``
transport (``PUT`` to ``path``, bodies as they are); the gRPC gun tunnel's profile is in
:mod:`vtwist.transport.grpc.profile`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import unquote

from vtwist.transport.h2.settings import HTTPSettings

Headers = list[tuple[str, str]]


class Codec(Protocol):
    """Turns application bytes into body bytes and body bytes back (one per stream)."""

    def encode(self, data: bytes) -> bytes:
        """The body bytes carrying ``data``."""

    def decode(self, data: bytes) -> bytes:
        """The application bytes in ``data`` (partial messages are held); ValueError on
        garbage."""


class Identity:
    """The body is the stream (the http transport)."""

    def encode(self, data: bytes) -> bytes:
        """``data`` as it is."""
        return data

    def decode(self, data: bytes) -> bytes:
        """``data`` as it is."""
        return data


@dataclass
class Answer:
    """A server's answer to a request: accept (a stream for the application) or refuse.

    ``headers`` are the response headers; a refusal with ``trailers_only`` ends the stream
    with them (a gRPC error), otherwise a refusal is a bare status ending the stream.
    """

    accepted: bool
    headers: Headers
    why: str = ""
    codec: Codec = field(default_factory=Identity)


class Profile:
    """One kind of tunnel over HTTP/2 streams; subclasses fill in the details."""

    name = "h2"
    #: The client waits for the response headers before its connection is up (V2Ray's http
    #: does; a gRPC client sends at once, its server may answer only when it has data).
    wait_for_response = True

    def request_headers(self, scheme: str, default_authority: str) -> Headers:
        """The request headers opening a stream (pseudo-headers first)."""
        raise NotImplementedError

    def check_response(self, headers: dict[str, str]) -> str | None:
        """None when the response opens the tunnel, else why not."""
        raise NotImplementedError

    def client_codec(self) -> Codec:
        """The codec of a client's stream."""
        return Identity()

    def accept(self, headers: dict[str, str]) -> Answer:
        """The server's answer to a request with ``headers``."""
        raise NotImplementedError

    def end_trailers(self) -> Headers | None:
        """Trailers ending a server's response (None: a plain END_STREAM)."""
        return None

    def check_trailers(self, headers: dict[str, str]) -> str | None:
        """None when the response's trailers say all went well, else why not."""
        return None


def request_path(headers: dict[str, str]) -> str:
    """The request's path, percent-decoded, without the query."""
    return unquote(headers.get(":path", "").split("?", 1)[0])


class HTTPProfile(Profile):
    """V2Ray 4.34's http transport (``transport/internet/http``).

    The client sends ``PUT`` to ``path`` with a random host from the list and
    ``Accept-Encoding: identity``; the server answers 200 with ``Cache-Control: no-store`` when
    the host is one of its hosts and the path starts with its path, 404 otherwise.
    """

    name = "h2"

    def __init__(self, settings: HTTPSettings, host: str | None = None) -> None:
        self.settings = settings
        self.host = host

    def request_headers(self, scheme: str, default_authority: str) -> Headers:
        """``PUT`` ``path`` at a random host."""
        return [(":method", "PUT"), (":scheme", scheme),
                (":authority", self.host or self.settings.random_host()),
                (":path", self.settings.path), ("accept-encoding", "identity"),
                ("user-agent", "Go-http-client/2.0")]

    def check_response(self, headers: dict[str, str]) -> str | None:
        """Anything but 200 fails the connection (as V2Ray's client)."""
        status = headers.get(":status", "")
        return None if status == "200" else f"server answered HTTP {status or '?'}"

    def accept(self, headers: dict[str, str]) -> Answer:
        """200 for a known host and a path under ours, else 404."""
        host = headers.get(":authority") or headers.get("host", "")
        if not self.settings.valid_host(host):
            return Answer(False, [(":status", "404")], f"host {host!r} is not served")
        path = request_path(headers)
        if not path.startswith(self.settings.path):
            return Answer(False, [(":status", "404")],
                          f"path {path!r} is not under {self.settings.path!r}")
        return Answer(True, [(":status", "200"), ("cache-control", "no-store")])
