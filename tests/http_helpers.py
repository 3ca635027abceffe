"""Blocking HTTP-proxy clients for tests (run them in a thread while the reactor serves)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

TIMEOUT = 20


def read_head(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """Read up to the end of a response head (after ``data``, bytes already read);
    ``(head, bytes after it)``."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_response(sock: socket.socket, data: bytes = b"",
                  rest: list[bytes] | None = None) -> tuple[bytes, bytes]:
    """One Content-Length response (after ``data``, bytes already read): ``(head, body)``.
    Bytes read past it (a pipelined response) go into ``rest`` when given."""
    head, body = read_head(sock, data)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed in the body")
        body += chunk
    if rest is not None:
        rest.append(body[length:])
    return head, body[:length]


def connect_through(proxy_port: int, host: str, port: int,
                    auth: bytes | None = None) -> tuple[socket.socket, bytes]:
    """A CONNECT through the proxy; the socket and the bytes after the 200's head."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=TIMEOUT)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n".encode()
    if auth:
        request += b"Proxy-Authorization: " + auth + b"\r\n"
    sock.sendall(request + b"\r\n")
    head, rest = read_head(sock)
    if not head.startswith(b"HTTP/1.1 200 "):
        sock.close()
        raise AssertionError(f"CONNECT answered {head!r}")
    return sock, rest


def connect_echo(proxy_port: int, host: str, echo_port: int, size: int) -> tuple[str, str]:
    """Send ``size`` random bytes to an echo server through CONNECT while reading them back;
    the sha256 of what was sent and of what came back."""
    sock, rest = connect_through(proxy_port, host, echo_port)
    sent = hashlib.sha256()
    got = hashlib.sha256()
    got.update(rest)
    received = len(rest)
    block = os.urandom(1 << 20)

    def send() -> None:
        left = size
        while left:
            piece = block[:min(left, len(block))]
            sent.update(piece)
            sock.sendall(piece)
            left -= len(piece)
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while received < size:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got.update(chunk)
            received += len(chunk)
    finally:
        sender.join(TIMEOUT)
        sock.close()
    if received != size:
        raise AssertionError(f"got {received} of {size} bytes back")
    return sent.hexdigest(), got.hexdigest()


@implementer(IHalfCloseableProtocol)
class HalfCloseEcho(Protocol):
    """Echoes; after the peer's FIN it flushes what it owes and closes."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass
