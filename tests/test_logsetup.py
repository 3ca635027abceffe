"""Log configuration: levels for the error log, access lines to their own file."""

from __future__ import annotations

import io
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogPublisher, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from vtwist.config.errors import ConfigError
from vtwist.config.model import LogConfig
from vtwist.logsetup import file_observers, filter_next_observers, observers


class LogSetupTests(SynchronousTestCase):
    def publish(self, config: LogConfig, out: io.StringIO) -> None:
        publisher = LogPublisher(*observers(config, out))
        Logger(namespace="vtwist.test", observer=publisher).debug("debug line")
        Logger(namespace="vtwist.test", observer=publisher).warn("warn line")
        Logger(namespace="vtwist.access", observer=publisher).info(
            "from 127.0.0.1:1 accepted tcp:a:1 [in >> out]")

    def test_levels(self) -> None:
        out = io.StringIO()
        self.publish(LogConfig(loglevel="warning"), out)
        text = out.getvalue()
        self.assertIn("warn line", text)
        self.assertNotIn("debug line", text)
        self.assertIn("accepted tcp:a:1 [in >> out]", text)

    def test_debug_and_none(self) -> None:
        out = io.StringIO()
        self.publish(LogConfig(loglevel="debug"), out)
        self.assertIn("debug line", out.getvalue())
        out = io.StringIO()
        self.publish(LogConfig(loglevel="none"), out)
        self.assertNotIn("warn line", out.getvalue())
        self.assertIn("accepted", out.getvalue())

    def test_access_none(self) -> None:
        """``"access": "none"`` turns the access log off, as in V2Ray."""
        out = io.StringIO()
        self.publish(LogConfig(loglevel="warning", access="none"), out)
        self.assertIn("warn line", out.getvalue())
        self.assertNotIn("accepted", out.getvalue())
        self.assertEqual(file_observers(LogConfig(access="none")), [])

    def test_files(self) -> None:
        directory = self.mktemp()
        os.makedirs(directory)
        access = os.path.join(directory, "access.log")
        error = os.path.join(directory, "error.log")
        out = io.StringIO()
        self.publish(LogConfig(loglevel="info", access=access, error=error), out)
        self.assertEqual(out.getvalue(), "")
        with open(access) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertRegex(lines[0], r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d from 127.0.0.1:1 accepted")
        with open(error) as f:
            self.assertIn("warn line", f.read())
        self.assertEqual(len(file_observers(LogConfig(access=access))), 1)
        self.assertEqual(len(file_observers(LogConfig(access=access, error=error))), 2)
        self.assertEqual(file_observers(LogConfig(loglevel="none", error=error)), [])
        self.assertEqual(file_observers(LogConfig()), [])

    def test_access_line_stamp_and_text(self) -> None:
        """Access lines: the ``line`` field as given (AccessLog's form) or the formatted
        event (any other access event), each stamped with its own second, local time."""
        import time

        from vtwist.address import Destination
        from vtwist.logsetup import _AccessLineObserver
        from vtwist.tunnel import access

        out = io.StringIO()
        observer = _AccessLineObserver(out)
        publisher = LogPublisher(observer)
        self.patch(access, "access_log", Logger(namespace="vtwist.access", observer=publisher))
        log = access.AccessLog()
        log.accepted("127.0.0.1:1", Destination.tcp("a", 1), "in", "out", "u@x")
        Logger(namespace="vtwist.access", observer=publisher).info("from {who} rejected",
                                                                   who="1.2.3.4:5")
        event = {"log_format": "{line}", "line": "x {y}", "log_time": 86400 * 365.5}
        observer(event)
        observer({**event, "line": "later", "log_time": 86400 * 365.5 + 61})
        lines = out.getvalue().splitlines()
        stamp = r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d "
        self.assertRegex(lines[0], stamp + r"from 127\.0\.0\.1:1 accepted tcp:a:1 "
                         r"\[in >> out\] email: u@x$")
        self.assertRegex(lines[1], stamp + r"from 1\.2\.3\.4:5 rejected$")
        fmt = "%Y/%m/%d %H:%M:%S"
        self.assertEqual(lines[2], time.strftime(fmt, time.localtime(86400 * 365.5)) + " x {y}")
        self.assertEqual(lines[3],
                         time.strftime(fmt, time.localtime(86400 * 365.5 + 61)) + " later")

    def test_switch_hands_access_events_straight_to_the_access_log(self) -> None:
        """LogSwitch (what ``vtwist run`` installs) writes access lines to the access log
        only, without the error log's filters, and the error log still never shows them;
        after a reopen the new access log takes them."""
        from vtwist.logsetup import LogSwitch

        directory = self.mktemp()
        os.makedirs(directory)
        access, error = (os.path.join(directory, name) for name in ("a.log", "e.log"))
        out = io.StringIO()
        switch = LogSwitch(LogConfig(loglevel="info", access=access, error=error), out)
        self.addCleanup(lambda: [f.close() for f in switch.files])
        self.assertIsNotNone(switch.access)
        Logger(namespace="vtwist.access", observer=switch).info("from x accepted y")
        Logger(namespace="vtwist.test", observer=switch).warn("warn line")
        switch.reopen(LogConfig(loglevel="info", access="none", error=error))
        self.assertIsNone(switch.access)
        Logger(namespace="vtwist.access", observer=switch).info("from x accepted z")
        for f in switch.files:
            f.flush()
        with open(access) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].endswith(" from x accepted y"), lines)
        with open(error) as f:
            text = f.read()
        self.assertIn("warn line", text)
        self.assertNotIn("accepted", text)
        self.assertEqual(out.getvalue(), "")

    def test_access_lines_straight_to_a_text_switch(self) -> None:
        """With ``send_lines_to(switch.access_line)`` (what ``vtwist run`` and twistd set up),
        AccessLog's lines reach a plain-text access log without an event, stamped and
        worded as the event path writes them; once the log is JSON the event goes out
        (with its fields), and once it is off nothing is written."""
        from vtwist.address import Destination
        from vtwist.logsetup import LogSwitch
        from vtwist.testing.doubles import LogCapture
        from vtwist.tunnel import access as access_module

        directory = self.mktemp()
        os.makedirs(directory)
        direct, via_event = (os.path.join(directory, n) for n in ("direct.log", "event.log"))
        switch = LogSwitch(LogConfig(loglevel="none", access=direct), io.StringIO())
        self.addCleanup(lambda: [f.close() for f in switch.files])
        self.addCleanup(access_module.send_lines_to, None)
        log = access_module.AccessLog()
        target = Destination.tcp("example.com", 443)

        def three() -> None:
            log.accepted("127.0.0.1:5", target, "in", "out", "a@b")
            log.closed("127.0.0.1:5", target, "in", "out", None, 1234, 5, 2.25)
            log.rejected("127.0.0.1:6", "socks", "bad version")

        access_module.send_lines_to(switch.access_line)
        three()
        # the same three through events, to a second switch
        access_module.send_lines_to(None)
        other = LogSwitch(LogConfig(loglevel="none", access=via_event), io.StringIO())
        self.addCleanup(lambda: [f.close() for f in other.files])
        capture = LogCapture()
        self.addCleanup(capture.stop)
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(other)
        self.addCleanup(globalLogPublisher.removeObserver, other)
        three()
        for f in switch.files + other.files:
            f.flush()

        def lines(path: str) -> list[str]:
            with open(path) as f:
                return [line[20:] for line in f.read().splitlines()]  # after the stamp

        self.assertEqual(lines(direct), lines(via_event))
        self.assertEqual(lines(direct), [
            "from 127.0.0.1:5 accepted tcp:example.com:443 [in >> out] email: a@b",
            "from 127.0.0.1:5 closed tcp:example.com:443 [in >> out] up 1.2 kB down 5 B 2.2 s",
            "from 127.0.0.1:6 rejected socks: bad version"])

        # JSON: access_line declines, the event (with its fields) goes out instead
        switch.reopen(LogConfig(loglevel="none", access=direct, format="json"))
        access_module.send_lines_to(switch.access_line)
        self.assertFalse(switch.access_line("from x accepted y"))
        before = len(capture.events)
        log.accepted("127.0.0.1:7", target, "in", "out")
        [event] = capture.events[before:]
        self.assertEqual((event["status"], event["source"]), ("accepted", "127.0.0.1:7"))
        # off: nothing taken, nothing written
        switch.reopen(LogConfig(loglevel="none", access="none"))
        self.assertFalse(switch.access_line("from x accepted z"))

    def test_unopenable_file(self) -> None:
        """A log file that cannot be opened is a ConfigError naming the key, not an OSError."""
        missing = os.path.join(self.mktemp(), "no-such-dir", "access.log")
        with self.assertRaises(ConfigError) as cm:
            file_observers(LogConfig(access=missing))
        self.assertEqual(str(cm.exception),
                         f"log.access: cannot open {missing}: No such file or directory")


class TwistdStdoutTests(SynchronousTestCase):
    """twistd owns the stdout observer: the config's level and access settings still apply."""

    def events(self, config: LogConfig) -> list[str]:
        class Beginner:
            def beginLoggingTo(self, observers, *args, **kwargs):
                self.observers = observers

        beginner = Beginner()
        filter_next_observers(config, beginner)
        lines: list[str] = []
        beginner.beginLoggingTo([lambda e: lines.append(formatEvent(e))])
        self.assertNotIn("beginLoggingTo", vars(beginner))  # one-shot
        publisher = LogPublisher(*beginner.observers)
        Logger(namespace="vtwist.test", observer=publisher).info("info line")
        Logger(namespace="vtwist.test", observer=publisher).error("error line")
        Logger(namespace="vtwist.access", observer=publisher).info("access line")
        return lines

    def test_levels_and_access(self) -> None:
        self.assertEqual(self.events(LogConfig(loglevel="info")),
                         ["info line", "error line", "access line"])
        self.assertEqual(self.events(LogConfig(loglevel="error")), ["error line", "access line"])
        self.assertEqual(self.events(LogConfig(loglevel="none", access="none")), [])
        self.assertEqual(self.events(LogConfig(loglevel="warning", access="/x", error="/y")), [])



class AccessFlushTests(TestCase):
    """On the running reactor (lean-polled: tests/__init__.py, as in vtwist's processes) the
    access lines of one turn go out with one flush at its end; off it, each at once."""

    def counting_file(self) -> tuple[io.StringIO, list[str]]:
        flushed: list[str] = []

        class Counting(io.StringIO):
            def flush(self) -> None:
                flushed.append(self.getvalue())
                super().flush()

        return Counting(), flushed

    @inlineCallbacks
    def test_one_flush_per_turn(self) -> Any:
        from vtwist.logsetup import _AccessLineObserver

        yield deferLater(reactor, 0)  # (trial starts a test before running the reactor)
        self.assertTrue(reactor.running)
        out, flushed = self.counting_file()
        observer = _AccessLineObserver(out)
        observer.write("from a accepted", 0.0)
        observer.write("from b accepted", 0.0)
        self.assertEqual(flushed, [])
        yield deferLater(reactor, 0)
        self.assertEqual(len(flushed), 1)
        self.assertEqual([line.split(" ", 2)[2] for line in flushed[0].splitlines()],
                         ["from a accepted", "from b accepted"])

    def test_at_once_when_the_reactor_is_not_running(self) -> None:
        from vtwist.logsetup import _AccessLineObserver

        self.assertFalse(reactor.running)  # a synchronous test runs outside it
        out, flushed = self.counting_file()
        _AccessLineObserver(out).write("from a accepted", 0.0)
        self.assertEqual(len(flushed), 1)

    def test_a_flush_left_pending_by_a_stopped_reactor_holds_no_line(self) -> None:
        """A line written after the reactor stopped, with the last turn's flush still due
        (it never came), is flushed at once."""
        from vtwist.logsetup import _AccessLineObserver

        out, flushed = self.counting_file()
        observer = _AccessLineObserver(out)
        observer._flushDue = True  # asked in a turn that never ended
        observer.write("from a accepted", 0.0)
        self.assertEqual(len(flushed), 1)
