"""In-memory test doubles and log capture shared across the test modules."""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher


class HalfCloseTransport(StringTransport):
    """A StringTransport that records half-closes in ``writeClosed``.

    ``host``/``peer`` set its addresses (StringTransport's defaults otherwise).
    """

    def __init__(self, host: tuple[str, int] | None = None,
                 peer: tuple[str, int] | None = None) -> None:
        super().__init__(hostAddress=None if host is None else IPv4Address("TCP", *host),
                         peerAddress=None if peer is None else IPv4Address("TCP", *peer))
        self.writeClosed = False

    def loseWriteConnection(self) -> None:
        self.writeClosed = True


def log_lines(test: Any, namespace: str = "") -> list[str]:
    """A list that collects the formatted log lines of namespaces starting with
    ``namespace`` from now until ``test``'s cleanup."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if str(event.get("log_namespace", "")).startswith(namespace):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    test.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines
