"""SOCKS5 clients (Twisted) for the interop tests: streams hashed both ways, UDP ASSOCIATE."""

from __future__ import annotations

import hashlib
import os
import struct
import time
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint

from vtwist.proxy.socks import codec

# -- SOCKS5 clients (Twisted), framed by vtwist's own SOCKS codec ----------------------------


class SocksStream(protocol.Protocol):
    """SOCKS5 CONNECT, then send ``payload`` and hash what comes back."""

    def __init__(self, host: str, port: int, cmd: int = 1) -> None:
        self.host, self.port, self.cmd = host, port, cmd
        self.buf = b""
        self.state = 0
        self.ready: defer.Deferred[Any] = defer.Deferred()
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self.received = 0
        self.sha = hashlib.sha256()
        self.target = 0
        self.done: defer.Deferred[Any] | None = None

    def connectionMade(self) -> None:
        self.transport.write(codec.client_greeting())

    def dataReceived(self, data: bytes) -> None:
        if self.state == 2:
            self.received += len(data)
            self.sha.update(data)
            if self.done is not None and self.received >= self.target:
                d, self.done = self.done, None
                d.callback(self.sha.hexdigest())
            return
        self.buf += data
        if self.state == 0 and len(self.buf) >= 2:
            if self.buf[:2] != b"\x05\x00":
                self.ready.errback(RuntimeError(f"bad greeting reply {self.buf!r}"))
                return
            self.buf = self.buf[2:]
            self.state = 1
            self.transport.write(codec.client_request(self.cmd, self.host, self.port))
        if self.state == 1:
            reply = codec.parse_reply(self.buf)
            if reply is codec.NEED_DATA:
                return
            rest = self.buf[reply[3]:]
            self.buf = b""
            self.state = 2
            if reply[0] != 0:
                self.ready.errback(RuntimeError(f"SOCKS reply code {reply[0]}"))
                return
            self.ready.callback(reply[:3])
            if rest:
                self.dataReceived(rest)

    def expect(self, n: int) -> defer.Deferred[str]:
        """Fires with the sha256 hex of what arrived once ``n`` bytes did."""
        self.target = n
        if self.received >= n:
            return defer.succeed(self.sha.hexdigest())
        self.done = defer.Deferred()
        return self.done

    def connectionLost(self, reason: Any = None) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"closed during SOCKS handshake: {reason}"))
        if self.done is not None:
            d, self.done = self.done, None
            d.errback(RuntimeError(f"closed after {self.received} of {self.target} bytes"))
        self.closed.callback(None)


async def socks_echo(reactor: Any, socks_port: int, host: str, port: int, size: int,
                     timeout: float = 60.0) -> tuple[str, str, float]:
    """Send ``size`` random bytes through SOCKS to an echo server.

    Returns (sha256 sent, sha256 received back, seconds).
    """
    p = SocksStream(host, port)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", socks_port).connect(
        protocol.Factory.forProtocol(lambda: p))
    await p.ready.addTimeout(10, reactor)
    block = os.urandom(1 << 20)
    sent = hashlib.sha256()
    start = time.monotonic()
    got = p.expect(size)
    got.addTimeout(timeout, reactor)
    remaining = size
    i = 0
    while remaining:
        piece = block[: min(len(block), remaining)]
        piece = struct.pack(">I", i) + piece[4:] if len(piece) > 4 else piece
        sent.update(piece)
        p.transport.write(piece)
        remaining -= len(piece)
        i += 1
    try:
        received = await got
    except BaseException:
        p.transport.abortConnection()
        await p.closed
        raise
    elapsed = time.monotonic() - start
    p.transport.loseConnection()
    await p.closed
    return sent.hexdigest(), received, elapsed


class _UDPClient(protocol.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: list[defer.Deferred[bytes]] = []
        self.got: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if self.waiting:
            self.waiting.pop(0).callback(data)
        else:
            self.got.append(data)

    def next(self) -> defer.Deferred[bytes]:
        if self.got:
            return defer.succeed(self.got.pop(0))
        d: defer.Deferred[bytes] = defer.Deferred(self.waiting.remove)  # a timeout forgets it
        self.waiting.append(d)
        return d


async def socks_udp_echo(reactor: Any, socks_port: int, host: str, port: int,
                         payloads: list[bytes], timeout: float = 10.0) -> list[bytes]:
    """UDP ASSOCIATE, send each payload to ``host:port``, return the echoed payloads."""
    control = SocksStream("0.0.0.0", 0, cmd=3)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", socks_port).connect(
        protocol.Factory.forProtocol(lambda: control))
    _, bnd_host, bnd_port = await control.ready.addTimeout(10, reactor)
    if bnd_host in ("0.0.0.0", "::"):
        bnd_host = "127.0.0.1"
    client = _UDPClient()
    udp = reactor.listenUDP(0, client, interface="127.0.0.1")
    try:
        out: list[bytes] = []
        for payload in payloads:
            # UDP may lose a datagram (a peer still setting up its session drops the first):
            # resend each second, as a real UDP client would, and skip late duplicates of
            # earlier answers.
            deadline = reactor.seconds() + timeout
            while True:
                udp.write(codec.build_datagram(host, port, payload), (bnd_host, bnd_port))
                wait = min(1.0, deadline - reactor.seconds())
                try:
                    reply = await client.next().addTimeout(wait, reactor)
                except defer.TimeoutError:
                    if reactor.seconds() >= deadline:
                        raise
                    continue
                got = codec.parse_datagram(reply).payload
                if got in out and got != payload:
                    continue  # a duplicate answer to an earlier resend
                out.append(got)
                break
        return out
    finally:
        await udp.stopListening()
        control.transport.loseConnection()
        await control.closed


async def explained(transfer: Any, v2ray: Any = None, lines: int = 30) -> Any:
    """Awaits ``transfer`` (a coroutine or Deferred); if it fails, the error carries what
    the proxies logged meanwhile: vtwist's warnings and, given a V2Ray runner, the tail of
    V2Ray's output. A rare failure in CI then says which side ended a connection and why."""
    from twisted.logger import LogLevel

    from vtwist.testing.doubles import LogCapture

    capture = LogCapture()
    try:
        return await transfer
    except Exception as e:
        vtwist_lines = "\n".join(capture.lines(LogLevel.info)[-lines:])
        v2ray_lines = "\n".join(v2ray.output().splitlines()[-lines:]) if v2ray else "-"
        raise AssertionError(f"{e}\nvtwist logged:\n{vtwist_lines}\n"
                             f"V2Ray logged:\n{v2ray_lines}") from e
    finally:
        capture.stop()
