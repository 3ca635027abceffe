"""Why an outbound connection failed, in the few words every inbound can answer with.

SOCKS turns a :class:`ConnectFailure` into its reply code, HTTP into a status; the tunnel's
log line names it, so the user reads the same reason the client was told.
"""

from __future__ import annotations

import errno
from enum import Enum

from twisted.internet import defer, error
from twisted.python.failure import Failure


class ConnectTimeout(error.TimeoutError):
    """The outbound did not connect within the policy's ``connect_timeout``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no connection within {seconds:g}s")
        self.seconds = seconds

    def __str__(self) -> str:
        return str(self.args[0])


class ConnectFailure(Enum):
    """The kinds of outbound failure an inbound can tell its client about."""

    REFUSED = "connection refused"
    TIMED_OUT = "timed out"
    HOST_UNREACHABLE = "host unreachable"
    NETWORK_UNREACHABLE = "network unreachable"
    OTHER = "general failure"


_ERRNO_KINDS = {
    errno.ECONNREFUSED: ConnectFailure.REFUSED,
    errno.ENETUNREACH: ConnectFailure.NETWORK_UNREACHABLE,
    errno.EHOSTUNREACH: ConnectFailure.HOST_UNREACHABLE,
    errno.ETIMEDOUT: ConnectFailure.TIMED_OUT,
}


def classify(failure: Failure) -> ConnectFailure:
    """The kind of ``failure`` (a failed connect, lookup or routing decision)."""
    e = failure.value
    if isinstance(e, error.ConnectionRefusedError):
        return ConnectFailure.REFUSED
    if isinstance(e, (error.TimeoutError, error.TCPTimedOutError, defer.TimeoutError,
                      defer.CancelledError, error.ConnectingCancelledError)):
        return ConnectFailure.TIMED_OUT
    if isinstance(e, (error.DNSLookupError, error.UnknownHostError)):
        return ConnectFailure.HOST_UNREACHABLE
    number = getattr(e, "osError", None) if isinstance(e, error.ConnectError) else \
        getattr(e, "errno", None)
    if number in _ERRNO_KINDS:
        return _ERRNO_KINDS[number]
    if isinstance(e, error.NoRouteError):
        return ConnectFailure.HOST_UNREACHABLE
    return ConnectFailure.OTHER
