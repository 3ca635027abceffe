"""V2Ray's activity timer: close after between T and 2T without traffic, no per-chunk work.

Callers set :attr:`ActivityTimer.active` on traffic (one attribute store); the timer checks
it every ``timeout`` seconds, clears it, and calls ``onIdle`` when it was not set.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class ActivityTimer:
    """Calls ``onIdle`` once after a whole period with no activity."""

    __slots__ = ("clock", "timeout", "onIdle", "active", "_call")

    def __init__(self, clock: IReactorTime, timeout: float, onIdle: Callable[[], None]) -> None:
        self.clock = clock
        self.timeout = timeout
        self.onIdle: Callable[[], None] | None = onIdle
        #: set by the owner on every read or write; cleared at each check
        self.active = False
        self._call: IDelayedCall | None = None
        self._arm()

    def reset(self, timeout: float) -> None:
        """Start a new period of ``timeout`` seconds, forgetting earlier activity."""
        if self.onIdle is None:
            return
        self.timeout = timeout
        self.active = False
        call = self._call
        if call is not None and call.active():  # move the pending check, no new timer
            call.reset(timeout)
        else:
            self._arm()

    def cancel(self) -> None:
        """Stop for good."""
        self.onIdle = None
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _arm(self) -> None:
        call = self._call
        if call is not None and call.active():
            call.cancel()
        self._call = self.clock.callLater(self.timeout, self._check)

    def _check(self) -> None:
        self._call = None
        if self.onIdle is None:
            return
        if self.active:
            self.active = False
            self._arm()
            return
        onIdle, self.onIdle = self.onIdle, None
        onIdle()
