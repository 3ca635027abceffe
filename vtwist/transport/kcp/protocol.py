"""mKCP on Twisted: UDP sockets, session demultiplexing, sessions as stream transports.

* :class:`KCPListener` is the one :class:`DatagramProtocol` of a listening port.  It keys
  sessions by ``(ip, port, conv)`` of the first segment in each datagram, creates a session
  for any non-TERMINATE segment from an unknown key (as V2Ray does), ignores TERMINATE for
  unknown keys, and keeps a short tombstone of finished keys so that stray segments of a
  finished conversation do not create a zombie session (V2Ray would create one).
* :class:`KCPClientProtocol` owns the connected UDP socket of one client connection.
* :class:`KCPTransport` exposes one :class:`~vtwist.transport.kcp.session.Session` to an
  application protocol as ``ITransport``, ``IConsumer`` and ``IPushProducer``.

mKCP has no half-close: ``loseWriteConnection`` is the same as ``loseConnection`` (data
already written is still delivered and retransmitted; the peer sees the CLOSE flag and its
own unsent data is discarded, as in V2Ray).  The application's ``connectionLost`` comes once
the session can deliver nothing more: after our close completes (Terminating), or after the
peer's TERMINATE once every in-order byte was delivered.

Flow control: when the application pauses the transport (``pauseProducing``) received data
stays in the session, ``rcv_nxt`` stops, and the advertised window shrinks; nothing is
buffered beyond one receive window.  Writers are paused (``IConsumer``) while the send
window holds more than ``send_buffer_segs`` segments.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from twisted.internet import address, defer, error
from twisted.internet.interfaces import (
    IConsumer,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import census, udpconnect
from .config import KCPConfig
from .crypt import make_authenticator
from .obfs import make_header
from .segment import CMD_TERMINATE, encode_cmd, parse_segments
from .session import Packer, Session, State

log = Logger(namespace="vtwist.transport.kcp")

#: the client's default handshake deadline: V2Ray's policy ``handshake`` (4 s)
DEFAULT_HANDSHAKE = 4.0

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

#: Bytes a UDP port may read in one reactor event (drain the socket fully).
DRAIN_BYTES = 64 * 1024 * 1024
#: How long a finished (ip, port, conv) is remembered on a listener.
TOMBSTONE_SECONDS = 60.0


def make_packer(config: KCPConfig) -> Packer:
    """A fresh header object plus the configured envelope."""
    return Packer(make_header(config.header_type), make_authenticator(config.seed))


def tune_socket(port: Any, size: int) -> tuple[int, int]:
    """Enlarge a UDP port's kernel buffers (forcing past rmem_max when root)."""
    sock = getattr(port, "socket", None)
    if sock is None:
        return (0, 0)
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass
    if hasattr(port, "maxThroughput"):
        port.maxThroughput = DRAIN_BYTES
    return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))


class _Stats:
    """Counters of one socket."""

    def __init__(self) -> None:
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.send_errors = 0
        self.undecodable = 0
        self.sessions_created = 0
        self.unknown_terminate = 0
        self.tombstone_hits = 0


@implementer(ITransport, IConsumer, IPushProducer)
class KCPTransport:
    """One mKCP session as a stream transport for an application protocol."""

    def __init__(self, owner: Any, session: Session, peer: tuple[str, int], clock: Any) -> None:
        self.owner = owner
        self.session = session
        self.peer = peer
        self.clock = clock
        self.protocol: Any = None
        self.connected = False
        self.disconnecting = False
        self.disconnected = False
        self._lost_sent = False
        self._aborted = False
        self._failure: Failure | None = None
        self._paused = False
        self._flush_call: Any = None
        self._timer: Any = None
        self._timer_at: float | None = None
        self._in_flush = False
        self._flush_again = False
        self.producer: Any = None
        #: Fires (with None) once the session is Terminated and its resources are freed.
        self.terminated: defer.Deferred = defer.Deferred()
        census.register(self)
        self._streaming = True
        self._producer_paused = False

    # ---------------------------------------------------------------- wiring
    def attach(self, protocol: IProtocol) -> None:
        """Connect the application protocol."""
        self.protocol = protocol
        self.connected = True
        try:
            protocol.makeConnection(self)  # type: ignore[attr-defined]
        except Exception:
            self._fail("connectionMade failed; aborting the mKCP session")
            return
        self.schedule_flush()

    @property
    def peerAnswered(self) -> bool:
        """False while a client session's peer has sent nothing (it may not be there)."""
        return bool(getattr(self.owner, "answered", True))

    @property
    def conv(self) -> int:
        """The conversation id."""
        return self.session.conv

    # ------------------------------------------------------------- ITransport
    def write(self, data: bytes) -> None:
        """Queue bytes; they go out at the end of this reactor iteration."""
        if self.disconnecting or self._lost_sent or not data:
            return
        self.session.write(bytes(data))
        if self.producer is not None and self._streaming and not self._producer_paused:
            if self.session.send_buffer_full:
                self._producer_paused = True
                self.producer.pauseProducing()
        self.schedule_flush()

    def writeSequence(self, data: Any) -> None:
        """Queue several byte strings."""
        self.write(b"".join(data))

    #: an inbound shedding this session in its handshake (vtwist.tunnel.handshakes) drops it
    #: at once: a graceful close would keep a flood's sessions for their linger
    abortOnShed = True

    def loseConnection(self) -> None:
        """Close: written data is still delivered, then the session terminates."""
        if self.disconnecting or self._lost_sent:
            return
        self.disconnecting = True
        self.session.close(self.clock.seconds())
        self.schedule_flush()

    def loseWriteConnection(self) -> None:
        """mKCP has no half-close: this is :meth:`loseConnection`."""
        self.loseConnection()

    def abortConnection(self) -> None:
        """Drop the session at once, telling the peer with a single TERMINATE."""
        if self.session.state == State.TERMINATED and self._lost_sent:
            return
        self.disconnecting = True
        self._aborted = True
        now = self.clock.seconds()
        self.session.abort(now)
        datagrams = self.session.datagrams_to_send(now)
        if datagrams:
            self.owner.send_datagrams(datagrams, self.peer)
        self._after_flush()

    def getPeer(self) -> address.IPv4Address | address.IPv6Address:
        """The remote UDP address."""
        host, port = self.peer[:2]
        if ":" in host:
            return address.IPv6Address("UDP", host, port)
        return address.IPv4Address("UDP", host, port)

    def getHost(self) -> Any:
        """The local UDP address."""
        return self.owner.getHost()

    # ---------------------------------------------------------- IPushProducer
    def pauseProducing(self) -> None:
        """Stop delivering data; the advertised window shrinks."""
        self._paused = True

    def resumeProducing(self) -> None:
        """Deliver buffered data again (and tell the peer the window opened)."""
        if self._paused:
            self._paused = False
            self.schedule_flush()

    def stopProducing(self) -> None:
        """Abort the connection."""
        self.abortConnection()

    # -------------------------------------------------------------- IConsumer
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Producer writing into this transport."""
        if self.producer is not None:
            raise RuntimeError("a producer is already registered")
        if self._lost_sent:
            producer.stopProducing()
            return
        self.producer = producer
        self._streaming = streaming
        self._producer_paused = False
        if not streaming:
            self.schedule_flush()

    def unregisterProducer(self) -> None:
        """Forget the producer."""
        self.producer = None

    # ---------------------------------------------------------------- engine
    def schedule_flush(self) -> None:
        """Run :meth:`flush` once at the end of this reactor iteration."""
        if self._in_flush:
            self._flush_again = True
        elif self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def segments_received(self, segments: list, now: float) -> None:
        """Hand parsed segments to the session (the owner demultiplexed them)."""
        self.session.receive_segments(segments, now)
        self.schedule_flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.session.handle_timer(self.clock.seconds())
        self.flush()

    def flush(self) -> None:
        """Deliver data, send what is due, rearm the timer, handle endings."""
        self._flush_call = None
        if self._in_flush:
            return
        self._in_flush = True
        try:
            self._deliver()
            session = self.session
            now = self.clock.seconds()
            datagrams = session.datagrams_to_send(now)
            if datagrams:
                self.owner.send_datagrams(datagrams, self.peer)
            self._check_ending()
            self._feed_producer()
        finally:
            self._in_flush = False
        self._after_flush()
        if self._flush_again:
            self._flush_again = False
            if not self.disconnected:
                self.schedule_flush()

    def _deliver(self) -> None:
        session = self.session
        while (not self._paused and not self.disconnecting and self.protocol is not None
               and not self._lost_sent):
            chunks = session.read()
            if not chunks:
                break
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            try:
                self.protocol.dataReceived(data)
            except Exception:
                self._fail("dataReceived failed; aborting the mKCP session")

    def fail_with(self, failure: Failure) -> None:
        """End the session at once; the application's connectionLost gets ``failure``."""
        if self._lost_sent:
            return
        self._failure = failure
        self.abortConnection()

    def _fail(self, message: str) -> None:
        """The application raised: log, abort the session, report the error to it."""
        self._failure = Failure()
        log.failure(message, self._failure)
        self.abortConnection()

    def _check_ending(self) -> None:
        session = self.session
        if not self._lost_sent and self.protocol is not None:
            st = session.state
            if st in (State.TERMINATING, State.TERMINATED) or (
                    st == State.PEER_TERMINATING and not session.has_data()):
                if st == State.PEER_TERMINATING:
                    session.close(self.clock.seconds())
                self._connection_lost()

    def _feed_producer(self) -> None:
        producer = self.producer
        if producer is None or self._lost_sent:
            return
        if self.session.send_queue_low:
            if self._streaming:
                if self._producer_paused:
                    self._producer_paused = False
                    producer.resumeProducing()
            else:
                producer.resumeProducing()

    def _after_flush(self) -> None:
        session = self.session
        if session.state == State.TERMINATED:
            if not self._lost_sent and self.protocol is not None:
                self._connection_lost()
            self._cancel_timers()
            if not self.disconnected:
                self.disconnected = True
                census.retire(self)
                d = self.owner.session_ended(self)
                if d is None:
                    self.terminated.callback(None)
                else:
                    d.addBoth(lambda _: self.terminated.callback(None))
            return
        at = session.next_timer()
        if at is None:
            self._cancel_timers()
            return
        if self._timer is not None and self._timer_at is not None and abs(self._timer_at - at) < 5e-4:
            return
        delay = max(0.0, at - self.clock.seconds())
        if self._timer is not None and self._timer.active():
            self._timer.reset(delay)
        else:
            self._timer = self.clock.callLater(delay, self._on_timer)
        self._timer_at = at

    def _cancel_timers(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._timer_at = None
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None

    def _connection_lost(self) -> None:
        self._lost_sent = True
        self.connected = False
        self.disconnecting = True
        if self._failure is not None:
            reason = self._failure
        elif self.session.timed_out:
            reason = Failure(error.ConnectionLost("mKCP peer timed out"))
        elif self._aborted:
            reason = Failure(error.ConnectionAborted())
        else:
            reason = Failure(error.ConnectionDone())
        if self.producer is not None:
            producer, self.producer = self.producer, None
            try:
                producer.stopProducing()
            except Exception:  # pragma: no cover - defensive
                log.failure("stopProducing failed")
        protocol = self.protocol
        try:
            protocol.connectionLost(reason)
        except Exception:
            log.failure("connectionLost failed")


class _KCPSocketProtocol(DatagramProtocol):
    """Shared parts of the listener and client socket protocols."""

    def __init__(self, config: KCPConfig, clock: Any) -> None:
        self.config = config
        self.clock = clock
        self.stats = _Stats()
        self.buffer_sizes = (0, 0)
        self._sock: Any = None
        self._connected = False

    @property
    def auth_failures(self) -> int:
        """Datagrams dropped because the envelope did not authenticate."""
        return self.packer.auth_failures

    def startProtocol(self) -> None:
        """Size the socket buffers and drain the socket fully on each read."""
        self.buffer_sizes = tune_socket(self.transport, self.config.socket_buffer_bytes)
        self._sock = getattr(self.transport, "socket", None)

    def getHost(self) -> Any:
        """Local address of the UDP socket."""
        return self.transport.getHost()

    def send_datagrams(self, datagrams: list[bytes], peer: tuple[str, int]) -> None:
        """Send datagrams; kernel refusals are counted and left to retransmission."""
        sock = self._sock
        stats = self.stats
        if sock is None:
            for d in datagrams:
                try:
                    self.transport.write(d, None if self._connected else peer)
                    stats.datagrams_out += 1
                except OSError as e:
                    stats.send_errors += 1
                    self.send_failed(e)
            return
        send = sock.send if self._connected else None
        sendto = sock.sendto
        for d in datagrams:
            try:
                if send is not None:
                    send(d)
                else:
                    sendto(d, peer)
                stats.datagrams_out += 1
            except OSError as e:
                stats.send_errors += 1
                self.send_failed(e)

    def send_failed(self, e: OSError) -> None:
        """A send raised (counted; retransmission goes on). Subclasses may look closer."""


class KCPListener(_KCPSocketProtocol):
    """The DatagramProtocol of a listening port: demultiplexes sessions."""

    def __init__(self, config: KCPConfig, factory: IProtocolFactory, clock: Any) -> None:
        super().__init__(config, clock)
        self.factory = factory
        self.packer = make_packer(config)
        self.sessions: dict[tuple[str, int, int], KCPTransport] = {}
        self.tombstones: dict[tuple[str, int, int], tuple[float, int, int]] = {}
        self._tomb_reply: dict[tuple[str, int, int], float] = {}

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Route one datagram to its session (creating it when V2Ray would)."""
        stats = self.stats
        stats.datagrams_in += 1
        plain = self.packer.unpack(data)
        if plain is None:
            return
        segs = parse_segments(plain)
        if not segs:
            stats.undecodable += 1
            return
        host, port = addr[0], addr[1]
        first = segs[0]
        key = (host, port, first.conv)
        conn = self.sessions.get(key)
        now = self.clock.seconds()
        if conn is None:
            if first.cmd == CMD_TERMINATE:
                stats.unknown_terminate += 1
                return
            tomb = self.tombstones.get(key)
            if tomb is not None:
                if tomb[0] > now:
                    stats.tombstone_hits += 1
                    self._answer_tombstone(key, tomb, now, (host, port))
                    return
                del self.tombstones[key]
            conn = self._new_session(key, (host, port), now)
            if conn is None:
                return
        conn.segments_received(segs, now)

    def _answer_tombstone(self, key: tuple[str, int, int], tomb: tuple[float, int, int],
                          now: float, peer: tuple[str, int]) -> None:
        # A finished conversation still hears from its peer: repeat TERMINATE, at most 1/s.
        if self._tomb_reply.get(key, 0.0) > now:
            return
        self._tomb_reply[key] = now + 1.0
        seg = encode_cmd(key[2], CMD_TERMINATE, 0, tomb[1], tomb[2], 100)
        self.send_datagrams([self.packer.pack(seg)], peer)

    def _new_session(self, key: tuple[str, int, int], peer: tuple[str, int],
                     now: float) -> KCPTransport | None:
        session = Session(key[2], self.config, self.packer, now)
        conn = KCPTransport(self, session, peer, self.clock)
        if ":" in peer[0]:
            paddr: Any = address.IPv6Address("UDP", peer[0], peer[1])
        else:
            paddr = address.IPv4Address("UDP", peer[0], peer[1])
        protocol = self.factory.buildProtocol(paddr)
        if protocol is None:
            return None
        self.sessions[key] = conn
        self.stats.sessions_created += 1
        conn.attach(protocol)
        return conn

    def session_ended(self, conn: KCPTransport) -> None:
        """Forget a Terminated session, leaving a tombstone."""
        key = (conn.peer[0], conn.peer[1], conn.conv)
        if self.sessions.get(key) is conn:
            del self.sessions[key]
        now = self.clock.seconds()
        self.tombstones[key] = (now + TOMBSTONE_SECONDS, conn.session.una, conn.session.rcv_nxt)
        if len(self.tombstones) > 4096 or len(self._tomb_reply) > 4096:
            self.tombstones = {k: v for k, v in self.tombstones.items() if v[0] > now}
            self._tomb_reply = {k: v for k, v in self._tomb_reply.items() if v > now}

    def abort_all(self) -> None:
        """Abort every session (used when the port stops listening)."""
        for conn in list(self.sessions.values()):
            conn.abortConnection()


class KCPClientProtocol(_KCPSocketProtocol):
    """The UDP socket of one client mKCP connection.

    Until the peer first answers, the socket is ``connect()``-ed (:mod:`.udpconnect`): an
    ICMP "port unreachable" then ends the session at once as a refusal (Twisted's epoll
    reactor drops the port; :meth:`stopProtocol` reads the socket error). Once the peer has
    answered the socket is disconnected, so later ICMP errors (a server restarting) are
    ignored, like V2Ray. If the peer sends nothing within ``handshake`` seconds of our first
    datagram, the session fails with :class:`~twisted.internet.error.TimeoutError`. Each
    failure is one warning saying why. Datagrams from anyone but the peer are dropped.
    """

    def __init__(self, config: KCPConfig, conv: int, peer: tuple[str, int], clock: Any,
                 linger: float = 8.0, handshake: float | None = DEFAULT_HANDSHAKE) -> None:
        super().__init__(config, clock)
        self.linger = linger
        self.packer = make_packer(config)
        self.peer = peer
        self.conv = conv
        self.conn: KCPTransport | None = None
        self.port: Any = None
        #: how long the peer may stay silent after our first datagram before we give up
        self.handshake = handshake
        #: the peer sent something that authenticated: from now on ICMP errors are ignored
        self.answered = False
        self._deadline: Any = None
        self._icmp = False  # the socket is connected, so ICMP errors reach us
        self._bound: Any = None  # the socket's address before it was connected

    def startProtocol(self) -> None:
        """Connect the socket to the peer until it answers (ICMP refusals reach us)."""
        super().startProtocol()
        sock = getattr(self.transport, "socket", None)
        if sock is not None and self.handshake is not None:
            self._bound = sock.getsockname()
            self._icmp = udpconnect.connect(sock, self.peer)

    def _where(self) -> str:
        host, port = self.peer[:2]
        return f"mKCP to {host}:{port}" if ":" not in host else f"mKCP to [{host}]:{port}"

    def _give_up(self, failure: Failure, why: str) -> None:
        """No session after all: one warning, and the application hears ``failure``."""
        self._cancel_deadline()
        conn = self.conn
        if conn is None or conn.disconnected:
            return
        log.warn("{where}: {why}", where=self._where(), why=why)
        conn.fail_with(failure)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _no_answer(self) -> None:
        self._deadline = None
        if not self.answered:
            why = (f"no answer within {self.handshake:g} s: is the server running at that "
                   "address, and do header and seed match its kcpSettings?")
            self._give_up(Failure(error.TimeoutError(why)), why)

    def send_datagrams(self, datagrams: list[bytes], peer: tuple[str, int]) -> None:
        """Send; the first datagram starts the handshake deadline."""
        super().send_datagrams(datagrams, peer)
        if (datagrams and not self.answered and self._deadline is None
                and self.handshake is not None and self.conn is not None
                and not self.conn.disconnected):
            self._deadline = self.clock.callLater(self.handshake, self._no_answer)

    def send_failed(self, e: OSError) -> None:
        """A send reported the peer's ICMP port unreachable: before any answer, a refusal
        (handled once the send loop is done)."""
        if e.errno == errno.ECONNREFUSED and self._icmp and not self.answered:
            self.clock.callLater(0, self._refused)

    def _refused(self) -> None:
        if not self.answered:
            why = "refused (ICMP port unreachable): nothing listens on that UDP port"
            self._give_up(Failure(error.ConnectionRefusedError("ICMP port unreachable")), why)

    def stopProtocol(self) -> None:
        """The socket is gone (closed by us or lost): the session cannot go on. Lost to an
        ICMP port unreachable before any answer: the server refused."""
        conn = self.conn
        lost = self.port is not None  # not closed by session_ended
        self.port = None
        self._cancel_deadline()
        sock = self._sock  # the transport is already unset here; the socket still open
        if (lost and self._icmp and not self.answered and sock is not None
                and udpconnect.refused(sock)):
            self._refused()
        if conn is not None and not conn.disconnected:
            conn.abortConnection()

    def start(self, protocol: IProtocol) -> KCPTransport:
        """Create the session and attach the application protocol."""
        session = Session(self.conv, self.config, self.packer, self.clock.seconds(),
                          terminating_ms=int(self.linger * 1000))
        self.conn = KCPTransport(self, session, self.peer, self.clock)
        self.conn.attach(protocol)
        return self.conn

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """Everything from the peer belongs to our one session."""
        self.stats.datagrams_in += 1
        conn = self.conn
        if conn is None or conn.disconnected:
            return
        if addr[0] != self.peer[0] or addr[1] != self.peer[1]:
            self.stats.undecodable += 1
            return
        plain = self.packer.unpack(data)
        if plain is None:
            return
        segs = parse_segments(plain)
        if not segs:
            self.stats.undecodable += 1
            return
        if not self.answered:
            self._answered()
        conn.segments_received(segs, self.clock.seconds())

    def _answered(self) -> None:
        """The peer speaks mKCP with our header and seed: later ICMP errors are ignored."""
        self.answered = True
        self._cancel_deadline()
        sock = getattr(self.transport, "socket", None)
        if self._icmp and sock is not None:
            self._icmp = not udpconnect.disconnect(sock, self._bound)

    def connectionRefused(self) -> None:
        """ICMP port unreachable after the peer answered: ignored, like V2Ray (the peer may
        come back)."""

    def session_ended(self, conn: KCPTransport) -> defer.Deferred | None:
        """The session is Terminated: close the socket."""
        self._cancel_deadline()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None


@implementer(IListeningPort)
class KCPListeningPort:
    """The IListeningPort of a KCP server endpoint."""

    def __init__(self, udp_port: Any, listener: KCPListener) -> None:
        self.udp_port = udp_port
        self.listener = listener

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> Any:
        """Abort all sessions and close the UDP socket."""
        self.listener.abort_all()
        return self.udp_port.stopListening()

    def getHost(self) -> Any:
        """Local address of the UDP socket."""
        return self.udp_port.getHost()
