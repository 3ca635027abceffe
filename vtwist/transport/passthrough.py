"""The transport methods a wrapping layer passes straight to the transport below it."""

from __future__ import annotations

from typing import Any


class PassThroughMixin:
    """Addresses and producer/consumer calls go to ``lowerTransport`` unchanged.

    Wrapping transports (TLS, WebSocket, the HTTP disguise, VMess) only change what is written
    and read; where bytes wait and who gets paused is the lower transport's business, so
    backpressure runs end to end through any stack of layers.
    """

    @property
    def lowerTransport(self) -> Any:
        """The transport below this layer."""
        raise NotImplementedError

    def getPeer(self) -> Any:
        """The lower transport's peer (the real client behind a PROXY header)."""
        return self.lowerTransport.getPeer()

    def getHost(self) -> Any:
        """The lower transport's local address."""
        return self.lowerTransport.getHost()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register on the lower transport: its buffer is where written bytes wait."""
        self.lowerTransport.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        """Unregister from the lower transport."""
        self.lowerTransport.unregisterProducer()

    def pauseProducing(self) -> None:
        """Stop reading from the lower transport."""
        self.lowerTransport.pauseProducing()

    def resumeProducing(self) -> None:
        """Read from the lower transport again."""
        self.lowerTransport.resumeProducing()


class WrappingTransportMixin(PassThroughMixin):
    """A protocol's plain side over the ``lower`` transport that carries its wire bytes
    (VMess, VLESS, Shadowsocks): aborting and stopping go straight to ``lower``."""

    lower: Any
    disconnecting: bool

    @property
    def lowerTransport(self) -> Any:
        """The transport carrying the wire bytes."""
        return self.lower

    def abortConnection(self) -> None:
        """Close the lower connection at once."""
        self.disconnecting = True
        abort = getattr(self.lower, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.lower.loseConnection()

    def stopProducing(self) -> None:
        """Stop for good: close."""
        self.lower.stopProducing()
