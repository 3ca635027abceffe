"""TLS over memory BIOs in one protocol object: the handshake, then a plain stream transport.

:class:`MemoryTLSLayer` is a :class:`~vtwist.transport.layer.Layer` right on the TCP
connection. It owns its ``OpenSSL.SSL.Connection`` (memory BIOs) and replaces Twisted's
``TLSMemoryBIOProtocol`` plus the layer above it, with less Python per connection:

* one protocol object per connection instead of two (no ``ProtocolWrapper``, no wrapping
  factory registering each protocol, no interface declarations per connection);
* one take of the outgoing BIO (and one ``transport.write``) per handshake flight or
  application write, and OpenSSL's calls made straight through the binding
  (:mod:`.calls`: no exception for "wants more bytes" or an empty BIO, no buffer per call);
* a server does not run a handshake step before the ClientHello has arrived, and its
  TLS 1.3 session tickets go out with its first write (its first answer), not in a write of
  their own (else with its close_notify, or when the handshake deadline passes);
* the plaintext of everything one TCP read carried reaches the application in one
  ``dataReceived`` call, not one per TLS record.

Half-close under TLS 1.3 (RFC 8446 §6.1: a close_notify closes the sender's direction only,
the peer may go on writing): ``loseWriteConnection`` sends a close_notify and keeps reading,
and a peer's close_notify reaches a half-close aware application as ``readConnectionLost``
while its own direction stays open (Go's ``tls.Conn``, so V2Ray's, Xray's and sing-box's, does
the same: a read ends, writes go on). So Trojan and VLESS, which have no end-of-stream mark
of their own, carry a client's half-close to the destination, and a finished exchange
closes at once instead of waiting for ``downlinkOnly``. Under TLS 1.2 a close_notify asks
the peer to close: ``loseWriteConnection`` sends nothing there, and a close_notify closes.

What the application sees is otherwise what it saw over ``TLSMemoryBIOProtocol``: ``connectionLost``
with the TLS error if one ended the connection, with ``ConnectionLost`` when the peer
closed TCP without a close_notify after the handshake; writes after ``loseConnection``
are dropped unless a producer is still registered, and the close_notify goes out once the
producer is unregistered (Twisted's order).
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from vtwist.transport.layer import Layer
from vtwist.transport.tls import calls

#: ``SSL_version()`` of TLS 1.3.
TLS1_3 = 0x0304


class MemoryTLSLayer(Layer):
    """TLS on the transport below (``creator`` makes the connection), the application above.

    ``client`` says which side of the handshake this is; subclasses hook
    :meth:`tlsHandshakeDone` and :meth:`tlsFirstData`.
    """

    name = "TLS"

    def __init__(self, factory: Any, creator: Any, client: bool, ready: Any = None,
                 clock: Any = None) -> None:
        super().__init__(factory, ready, clock)
        self.creator = creator
        self.client = client
        #: The ``OpenSSL.SSL.Connection`` once the lower connection is up.
        self.tls: SSL.Connection | None = None
        self._reason: Failure | None = None  # the TLS error that ended the connection
        self._peerClosed = False  # the peer's close_notify arrived
        self._shutDown = False  # our close_notify is out (or the TLS side is done)
        self._producer: Any = None
        self._closePending = False  # loseConnection waits for the producer to go
        self._blocked: list[bytes] | None = None  # writes waiting for a read (renegotiation)
        self._aborted = False
        self._lost = False  # the lower connection is gone
        self._fresh = True  # no application data read yet
        self._corked = False  # writes stay in the BIO (closeWith: the close takes them)
        self._holding = False  # a server's tickets wait for its first write (see _step)
        self._halfClosed = False  # TLS 1.3: our close_notify is out, the peer may go on
        self._peer: Any = None  # getPeer's and getHost's answers, once asked
        self._host: Any = None

    # -- handshake ---------------------------------------------------------------------
    def handshakeStarted(self) -> None:
        """Make the TLS connection; a client sends its ClientHello."""
        if self.client:
            self.tls = self.creator.clientConnectionForTLS(self)
            self._step()
        else:
            self.tls = self.creator.serverConnectionForTLS(self)

    def handshakeData(self, data: bytes) -> None:
        """A handshake flight (or part of one) from the peer."""
        calls.put(self.tls, data)
        self._step()

    def _step(self) -> None:
        try:
            done = calls.handshake(self.tls)
        except SSL.Error:
            self._fail(Failure())
            return
        if not done:
            self._flush(0)
            return
        # A TLS 1.3 server's session tickets wait in the BIO for its first write (or its
        # close, or the handshake deadline, whose timer stays for this): OpenSSL makes them
        # on the client's Finished, and sent alone they cost a write here and a read event at
        # the client (Go's server sends its ticket with its flight). A TLS 1.2 server's last
        # flight carries its Finished: that goes now.
        timer = None
        if not self.client and calls.version(self.tls) >= TLS1_3:
            timer, self._timer = self._timer, None
            self._holding = True  # (a flush, an early write say, ends it)
        self.tlsHandshakeDone()
        if self.failed or self.app is None:
            self._flush(0)
        else:
            if self._holding and self._timer is None:
                self._timer, timer = timer, None
            self._receive()
        if timer is not None and timer.active():
            timer.cancel()

    def tlsHandshakeDone(self) -> None:
        """The handshake (and verification) succeeded: connect the application."""
        self.handshakeDone()

    def tlsFirstData(self) -> None:
        """The first records after the handshake were read (TLS 1.3 tickets are in)."""

    def _timedOut(self) -> None:
        """The handshake deadline: fails a handshake, or sends the tickets still waiting."""
        if self._holding:
            self._timer = None
            self._flush(0)
            return
        super()._timedOut()

    def _fail(self, reason: Failure) -> None:
        """A TLS error: send the alert OpenSSL made, close, report ``reason``."""
        if self._reason is None:
            self._reason = reason
        self._shutDown = True
        self._flush(0)
        self.transport.loseConnection()

    # -- reading -------------------------------------------------------------------------
    def streamData(self, data: bytes) -> None:
        """Records after the handshake: decrypt, hand the plaintext over in one call."""
        calls.put(self.tls, data)
        self._receive()
        if self._fresh:
            self._fresh = False
            self.tlsFirstData()

    def _receive(self) -> None:
        chunks: list[bytes] = []
        closed: bool | Failure | None
        try:
            closed = calls.read(self.tls, chunks) or None
        except SSL.Error:
            closed = Failure()
        if chunks and not self._aborted and self.app is not None:
            self.app.dataReceived(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if self._blocked is not None and closed is None:
            self._unblock()
        if closed is True:  # the peer's close_notify
            self._peerClosed = True
            if self._halfOpen():  # TLS 1.3: the peer's direction ends, ours goes on
                self.app.readConnectionLost()  # type: ignore[union-attr]
            else:  # answer it and close
                self._closeTLS()
        elif closed is not None:
            self._fail(closed)
        elif not self._holding:
            self._flush(0)  # tickets, key updates: anything OpenSSL answered

    # -- writing -------------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Encrypt and send application bytes (dropped once closing, as Twisted does)."""
        if self.disconnecting and self._producer is None:
            return
        self._write(data)

    def writeSequence(self, data: Any) -> None:
        """Several buffers as one write (one or more records)."""
        self.write(b"".join(data))

    def closeWith(self, data: bytes) -> None:
        """``write(data)`` then ``loseConnection()``, the record and the close_notify in one
        write below when the close can go at once (a WebSocket close frame, say)."""
        if self._producer is None and self._blocked is None:
            self._corked = True
            try:
                self.write(data)
            finally:
                self._corked = False
        else:
            self.write(data)
        self.loseConnection()

    def _write(self, data: bytes) -> None:
        if self._shutDown or self._halfClosed or not data:
            return
        if self._blocked is not None:
            self._blocked.append(data)
            return
        tls = self.tls
        size = len(data)
        view = memoryview(data) if size > 16384 else data
        done = 0
        try:
            while done < size:
                done += calls.write(tls, view[done:] if done else view)
        except SSL.WantReadError:
            self._blocked = [bytes(view[done:])]
            if self._producer is not None:
                self._producer.pauseProducing()
        except SSL.Error:
            self._fail(Failure())
            return
        if not self._corked:
            self._flush(done)

    def _unblock(self) -> None:
        waiting, self._blocked = self._blocked, None
        for data in waiting or ():
            self._write(data)
        if self._blocked is None:
            if self._producer is not None:
                self._producer.resumeProducing()
            elif self._closePending:
                self._closeTLS()

    def _flush(self, written: int) -> None:
        """Send what OpenSSL put in the outgoing BIO: one take, one write."""
        tls = self.tls
        if tls is None:
            return
        if self._holding:  # the tickets go now: the deadline that bounded their wait goes
            self._holding = False
            self._cancelTimer()
        out = calls.take(tls, written)
        if out:
            self.transport.write(out)

    # -- closing ---------------------------------------------------------------------------
    def closeLayer(self) -> None:
        """The application closes: close_notify, then close TCP (after a producer goes)."""
        if self._lost:
            return
        if self.app is None or self.tls is None:
            self.abortConnection()
            return
        if self._producer is not None or self._blocked is not None:
            self._closePending = True
            return
        self._closeTLS()

    def _halfOpen(self) -> bool:
        """The peer's close_notify ends only its direction: TLS 1.3, our direction still
        open, an application that takes a half-close."""
        return (not self._halfClosed and not self._shutDown and not self.disconnecting
                and self.tls is not None and calls.version(self.tls) >= TLS1_3
                and IHalfCloseableProtocol.providedBy(self.app))

    def loseWriteConnection(self) -> None:  # noqa: N802 - Twisted's name
        """Half-close: under TLS 1.3 a close_notify (the peer may go on sending, we go on
        reading); under TLS 1.2 nothing (there it would ask the peer to close)."""
        tls = self.tls
        if (tls is None or self.app is None or self._lost or self._halfClosed
                or self._shutDown or self.disconnecting or self._blocked is not None
                or calls.version(tls) < TLS1_3):
            return
        self._halfClosed = True
        try:
            tls.shutdown()
        except SSL.Error:
            pass
        self._flush(0)
        if self._peerClosed:  # both directions are done
            self._closeTLS()

    def _closeTLS(self) -> None:
        if self._lost:
            return
        if not self._shutDown:
            self._shutDown = True
            if self._halfClosed:  # our close_notify went out already
                self.transport.loseConnection()
                return
            try:
                self.tls.shutdown()
            except SSL.Error:
                pass
            self._flush(0)
        self.transport.loseConnection()

    def abortConnection(self) -> None:
        """Drop the connection now; nothing more reaches the application."""
        if self._lost:
            return
        self._aborted = True
        self._shutDown = True
        super().abortConnection()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register on the transport below (TLS adds no buffer of its own)."""
        self._producer = producer
        self.transport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Unregister below; a close that waited for this goes ahead."""
        if self._producer is None:
            return
        self._producer = None
        self.transport.unregisterProducer()
        if self._closePending and self._blocked is None:
            self._closePending = False
            self._closeTLS()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The TCP connection is gone: report the TLS reason if there is one."""
        if self._reason is not None:
            reason = self._reason
        elif self.app is not None and not self._peerClosed and not self._shutDown \
                and reason.check(ConnectionDone):
            reason = Failure(ConnectionLost("closed without a TLS close_notify"))
        self._reason = None
        self._shutDown = True
        if self.app is not None and self.tls is not None:
            # A session stays resumable however the connection ended after its handshake
            # (OpenSSL drops the session of a connection freed without a close_notify sent,
            # which would make the client's next connection a full handshake; Go resumes).
            calls.keep_session(self.tls)
        self._lost = True
        try:
            super().connectionLost(reason)
        finally:
            self.tls = None  # OpenSSL's buffers go now, not when this object goes

    # -- what the application may ask ------------------------------------------------------
    def getPeer(self) -> Any:
        """The lower transport's peer, asked once (a connection's peer does not change; the
        tunnel, the access log and the protocols above each ask)."""
        peer = self._peer
        if peer is None:
            peer = self._peer = self.transport.getPeer()
        return peer

    def getHost(self) -> Any:
        """The lower transport's local address, asked once (a ``getsockname`` per call on
        TCP)."""
        host = self._host
        if host is None:
            host = self._host = self.transport.getHost()
        return host

    def getHandle(self) -> SSL.Connection | None:
        """The ``OpenSSL.SSL.Connection`` (as Twisted's TLS transport answers)."""
        return self.tls

    def getPeerCertificate(self) -> Any:
        """The peer's certificate (``OpenSSL.crypto.X509``), if it sent one."""
        return self.tls.get_peer_certificate() if self.tls is not None else None

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The ALPN protocol agreed on, if any."""
        if self.tls is None:
            return None
        return self.tls.get_alpn_proto_negotiated() or None
