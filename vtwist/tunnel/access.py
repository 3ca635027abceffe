"""Access lines in V2Ray's form, accepted and rejected, from one place.

``from 127.0.0.1:50000 accepted tcp:example.com:443 [socks-in >> direct] email: a@b``
``from 127.0.0.1:50001 rejected socks: invalid username or password``
``from 127.0.0.1:50000 closed tcp:example.com:443 [socks-in >> direct] up 1.2 kB down 48.3 MB 12.4 s``

Each event also carries its fields as keys (``status``: accepted/rejected/closed,
``source``, ``destination``, ``inbound``, ``outbound``, ``email``; closed ones ``up`` and
``down`` in bytes and ``duration`` in seconds) for structured (JSON) log observers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger, LogLevel

from vtwist.address import Destination

access_log = Logger(namespace="vtwist.access")

#: where lines go without an event (:func:`send_lines_to`); it answers False when it cannot
#: take them (the access log became JSON, or off), and the event goes out as usual
_line_sink: Callable[[str], bool] | None = None


def send_lines_to(sink: Callable[[str], bool] | None) -> None:
    """Hand access lines straight to ``sink`` (the application's log switch, when it is the
    access log's one destination and writes plain lines): no event dict, no trip through
    the global log publisher for the two lines of every connection. None: events again."""
    global _line_sink
    _line_sink = sink


def _emit(event: dict[str, Any]) -> None:
    """``access_log.info("{line}", **event)`` without ``Logger.emit``'s per-call check of
    the level against every level there is (two access lines per connection)."""
    event.update(log_logger=access_log, log_level=LogLevel.info,
                 log_namespace=access_log.namespace, log_source=None, log_format="{line}",
                 log_time=time.time())
    access_log.observer(event)


class AccessLog:
    """Writes access lines unless switched off (``log.access: "none"``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def accepted(self, source: str, destination: Destination, inbound_tag: str | None,
                 outbound_tag: str | None, email: str | None = None) -> None:
        """One connection or UDP session was routed to an outbound."""
        if not self.enabled:
            return
        target = str(destination)
        line = f"from {source} accepted {target} [{inbound_tag or ''} >> {outbound_tag or ''}]"
        if email:
            line += f" email: {email}"
        sink = _line_sink
        if sink is not None and sink(line):
            return
        # the fields are keys of their own too (log.format json)
        _emit({"line": line, "status": "accepted", "source": source, "destination": target,
               "inbound": inbound_tag or "", "outbound": outbound_tag or "",
               "email": email or ""})

    def rejected(self, source: str, protocol: str, why: str) -> None:
        """An inbound refused a client (bad handshake, wrong credentials, probe...)."""
        if not self.enabled:
            return
        line = f"from {source} rejected {protocol}: {why}"
        sink = _line_sink
        if sink is not None and sink(line):
            return
        _emit({"line": line, "status": "rejected", "source": source, "protocol": protocol,
               "reason": why})

    def closed(self, source: str, destination: Destination, inbound_tag: str | None,
               outbound_tag: str | None, email: str | None, up: int, down: int,
               duration: float) -> None:
        """A relayed connection or UDP session ended: the bytes each way and how long."""
        if not self.enabled:
            return
        target = str(destination)
        line = (f"from {source} closed {target} [{inbound_tag or ''} >> "
                f"{outbound_tag or ''}] up {human_bytes(up)} down {human_bytes(down)} "
                f"{duration:.1f} s")
        if email:
            line += f" email: {email}"
        sink = _line_sink
        if sink is not None and sink(line):
            return
        _emit({"line": line, "status": "closed", "source": source, "destination": target,
               "inbound": inbound_tag or "", "outbound": outbound_tag or "",
               "email": email or "", "up": up, "down": down, "duration": round(duration, 3)})


def human_bytes(n: int) -> str:
    """``n`` bytes in SI units with one decimal: ``532 B``, ``1.2 kB``, ``48.3 MB``."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB"):
        value /= 1000
        if value < 999.95:
            return f"{value:.1f} {unit}"
    return f"{value / 1000:.1f} TB"
