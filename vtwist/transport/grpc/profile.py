"""The gun tunnel's requests, answers and message codecs on HTTP/2 streams (sans-IO).

``POST /<service>/Tun`` (``TunMulti`` in multi mode) with ``content-type: application/grpc``
and ``te: trailers``; each message is a gRPC length-prefixed ``Hunk`` (``MultiHunk``); the
server ends its response with the trailer ``grpc-status: 0``. A server accepts both methods,
as Xray's does. Errors are answered as grpc-go does: 415 for a request that is not gRPC,
``grpc-status: 12`` (unimplemented) for an unknown method.
"""

from __future__ import annotations

from vtwist.transport.grpc import framing
from vtwist.transport.grpc.settings import GRPCSettings
from vtwist.transport.h2.profile import Answer, Headers, Profile, request_path

#: Largest Hunk sent: larger writes are split (grpc-go accepts 4 MiB messages by default).
MAX_HUNK = 256 * 1024
CONTENT_TYPE = "application/grpc"
USER_AGENT = "grpc-go/1.58.3"


class GunCodec:
    """Application bytes <-> gRPC messages carrying Hunk (or MultiHunk in ``multi`` mode)."""

    def __init__(self, multi: bool) -> None:
        self.multi = multi
        self.decoder = framing.MessageDecoder()

    def encode(self, data: bytes) -> bytes:
        """One message per ``MAX_HUNK`` bytes of ``data``."""
        make = (lambda c: framing.multi_hunk_message([c])) if self.multi else \
            framing.hunk_message
        if len(data) <= MAX_HUNK:
            return make(data)
        return b"".join(make(data[i:i + MAX_HUNK]) for i in range(0, len(data), MAX_HUNK))

    def decode(self, data: bytes) -> bytes:
        """The data of every complete message in ``data`` (FramingError on garbage)."""
        messages = self.decoder.feed(data)
        if not messages:
            return b""
        if self.multi:
            return b"".join(b"".join(framing.decode_multi_hunk(m)) for m in messages)
        return b"".join(framing.decode_hunk(m) for m in messages)


def _content_type_ok(value: str) -> bool:
    return value == CONTENT_TYPE or value.startswith((CONTENT_TYPE + "+", CONTENT_TYPE + ";"))


class GunProfile(Profile):
    """The gun tunnel per ``grpcSettings``."""

    name = "grpc"
    wait_for_response = False

    def __init__(self, settings: GRPCSettings) -> None:
        self.settings = settings

    def request_headers(self, scheme: str, default_authority: str) -> Headers:
        """``POST`` to the Tun (or TunMulti) method."""
        return [(":method", "POST"), (":scheme", scheme),
                (":path", self.settings.client_path),
                (":authority", self.settings.authority or default_authority),
                ("content-type", CONTENT_TYPE), ("user-agent", USER_AGENT),
                ("te", "trailers")]

    def check_response(self, headers: dict[str, str]) -> str | None:
        """200, gRPC content, and no error status already (a trailers-only answer)."""
        status = headers.get(":status", "")
        if status != "200":
            return f"server answered HTTP {status or '?'}"
        error = self.check_trailers(headers) if "grpc-status" in headers else None
        if error:
            return error
        if not _content_type_ok(headers.get("content-type", "")):
            return f"server answered content-type {headers.get('content-type', '')!r}"
        return None

    def client_codec(self) -> GunCodec:
        """Hunks, or MultiHunks in multi mode."""
        return GunCodec(self.settings.multi_mode)

    def accept(self, headers: dict[str, str]) -> Answer:
        """The Tun and TunMulti methods; 415 or grpc-status 12 for the rest."""
        if headers.get(":method") != "POST" or not _content_type_ok(
                headers.get("content-type", "")):
            return Answer(False, [(":status", "415")], "not a gRPC request")
        path = request_path(headers)
        error = [(":status", "200"), ("content-type", CONTENT_TYPE)]
        if path == self.settings.tun_path:
            return Answer(True, error, codec=GunCodec(False))
        if path == self.settings.multi_path:
            return Answer(True, error, codec=GunCodec(True))
        return Answer(False, [*error, ("grpc-status", "12"),
                              ("grpc-message", f"unknown method {path}")],
                      f"unknown method {path!r}")

    def end_trailers(self) -> Headers:
        """``grpc-status: 0``."""
        return [("grpc-status", "0")]

    def check_trailers(self, headers: dict[str, str]) -> str | None:
        """A non-zero grpc-status is an error."""
        status = headers.get("grpc-status", "0")
        if status == "0":
            return None
        return f"grpc-status {status}: {headers.get('grpc-message', '')}".rstrip(": ")
