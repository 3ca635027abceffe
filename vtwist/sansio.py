"""What every sans-IO core in vtwist shares: the "need more data" sentinel and the event base.

The cores (SOCKS codec, VMess handshake and body, mKCP, routing matchers, and the protocol
codecs that follow) turn bytes into events and back in plain Python. They never import
Twisted, sockets or the clock: the time is a parameter (``now``, seconds as a float, or
milliseconds where a protocol counts in them), as in aioquic's ``receive_datagram(data, now)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, final

#: A source of the current time in seconds (``time.time`` at the edges, a fake in tests).
Clock = Callable[[], float]


@final
class _NeedData:
    """The type of :data:`NEED_DATA`."""

    _instance: _NeedData | None = None

    def __new__(cls) -> _NeedData:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NEED_DATA"

    def __reduce__(self) -> str:
        return "NEED_DATA"


#: A core's answer when the bytes so far do not complete a message: feed it more.
NEED_DATA: Final = _NeedData()

NeedData = _NeedData


class Event:
    """Base class of the events that sans-IO cores return (as in h11 and wsproto)."""

    __slots__ = ()
