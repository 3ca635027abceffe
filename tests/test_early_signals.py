"""SIGINT/SIGTERM that arrive while the ports open (before the reactor runs) stop the
reactor once it runs, rather than raising KeyboardInterrupt inside a listening Deferred
(which logged 'cannot listen' and let the process run on)."""

from __future__ import annotations

import signal
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from vtwist.runner import stop_on_early_signals


class _Reactor:
    def __init__(self) -> None:
        self.when_running: list[Any] = []

    def callWhenRunning(self, f: Any) -> None:  # noqa: N802 - Twisted's name
        self.when_running.append(f)

    def stop(self) -> None:
        pass


class EarlySignalTests(SynchronousTestCase):
    def test_signals_stop_once_running(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
        reactor = _Reactor()
        stop_on_early_signals(reactor)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.getsignal(signum)(signum, None)  # no KeyboardInterrupt, no exit
        self.assertEqual(reactor.when_running, [reactor.stop, reactor.stop])
