"""V2Ray's activity timer (vtwist.tunnel.activity) on a task.Clock."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.tunnel.activity import ActivityTimer


class ActivityTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.idle: list[float] = []
        self.timer = ActivityTimer(self.clock, 300, lambda: self.idle.append(self.clock.seconds()))

    def test_idle_after_a_quiet_period_active_ones_extend(self) -> None:
        self.clock.advance(299)
        self.timer.active = True
        self.clock.advance(1)  # the check finds activity: another period
        self.assertEqual(self.idle, [])
        self.clock.advance(300)
        self.assertEqual(self.idle, [600])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reset_moves_the_pending_check_without_a_new_timer(self) -> None:
        """A reset (connIdle -> downlinkOnly at a half-close) reschedules the one pending
        call, earlier or later, and forgets earlier activity."""
        pending = self.clock.getDelayedCalls()
        self.clock.advance(10)
        self.timer.active = True
        self.timer.reset(5)  # earlier
        self.assertEqual(self.clock.getDelayedCalls(), pending)
        self.clock.advance(5)
        self.assertEqual(self.idle, [15])
        self.timer.reset(1)  # after the end: nothing
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_reset_later_and_after_a_check(self) -> None:
        self.timer.reset(400)  # later than the pending 300
        self.clock.advance(399)
        self.assertEqual(self.idle, [])
        self.clock.advance(1)
        self.assertEqual(self.idle, [400])

    def test_cancel(self) -> None:
        self.timer.cancel()
        self.timer.reset(1)
        self.clock.advance(1000)
        self.assertEqual(self.idle, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
