"""The replay tables the workers share (sans-IO: a buffer, a lock and the time are given)."""

from __future__ import annotations

import mmap
import os

from twisted.trial.unittest import SynchronousTestCase

from vtwist.proxy import sharedreplay
from vtwist.proxy.shadowsocks.replay import SaltFilter, salt_filter
from vtwist.proxy.sharedreplay import (
    SharedAuthIDFilter,
    SharedSaltFilter,
    SharedSessionHistory,
    SharedTable,
    TableSpec,
    layout,
    mapping_size,
)
from vtwist.proxy.vmess.replay import AuthIDFilter, auth_id_filter, session_history


def table(spec: TableSpec, buffer: bytearray | None = None) -> SharedTable:
    buffer = buffer if buffer is not None else bytearray(spec.size)
    t = SharedTable(buffer, 0, spec)
    return t


class SharedTableTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.spec = TableSpec("t", 64, period=10.0)
        self.buffer = bytearray(self.spec.size)
        self.table = SharedTable(self.buffer, 0, self.spec)
        self.table.initialize(b"k" * 16, 1000.0)

    def test_replay_refused(self) -> None:
        self.assertTrue(self.table.check_and_add(b"a" * 16, 1000.0))
        self.assertFalse(self.table.check_and_add(b"a" * 16, 1000.5))
        self.assertTrue(self.table.check_and_add(b"b" * 16, 1000.5))
        self.assertEqual(len(self.table), 2)

    def test_two_views_are_one_table(self) -> None:
        """Two processes' views of one mapping: a value seen through one is refused
        through the other."""
        other = SharedTable(self.buffer, 0, self.spec)
        self.assertTrue(self.table.check_and_add(b"x", 1000.0))
        self.assertFalse(other.check_and_add(b"x", 1001.0))
        self.assertTrue(other.check_and_add(b"y", 1001.0))
        self.assertFalse(self.table.check_and_add(b"y", 1002.0))

    def test_remembered_for_at_least_one_period(self) -> None:
        """A value is refused for at least ``period`` and forgotten after ``2 * period``."""
        self.assertTrue(self.table.check_and_add(b"v", 1009.9))
        self.assertFalse(self.table.check_and_add(b"v", 1010.1))  # rotated: the previous
        self.assertFalse(self.table.check_and_add(b"v", 1019.8))
        self.assertTrue(self.table.check_and_add(b"w", 1020.0))  # second rotation
        self.assertTrue(self.table.check_and_add(b"v", 1020.1))  # forgotten after 2 periods

    def test_long_idle_clears_both(self) -> None:
        self.assertTrue(self.table.check_and_add(b"v", 1000.0))
        self.assertTrue(self.table.check_and_add(b"v", 1100.0))
        self.assertEqual(len(self.table), 1)

    def test_full_generation_fails_closed(self) -> None:
        """In period mode a full generation refuses new values (no early forgetting)."""
        spec = TableSpec("t", 8, period=10.0, capacity=3)
        t = table(spec)
        t.initialize(b"k" * 16, 0.0)
        self.assertEqual([t.check_and_add(bytes([i]), 1.0) for i in range(4)],
                         [True, True, True, False])
        self.assertFalse(t.check_and_add(b"\x00", 2.0))  # still remembered

    def test_count_rotation(self) -> None:
        """Without a period (salts) a full generation rotates: the last ``capacity`` values
        at least are remembered."""
        spec = TableSpec("t", 16, capacity=4)
        t = table(spec)
        t.initialize(b"k" * 16, 0.0)
        for i in range(4):
            self.assertTrue(t.check_and_add(bytes([i]), 0.0))
        self.assertTrue(t.check_and_add(b"\x10", 0.0))  # rotates: 0..3 are the previous
        for i in range(4):
            self.assertFalse(t.check_and_add(bytes([i]), 0.0))
        for i in range(0x11, 0x14):
            self.assertTrue(t.check_and_add(bytes([i]), 0.0))
        self.assertTrue(t.check_and_add(b"\x20", 0.0))  # rotates again: 0..3 forgotten
        self.assertTrue(t.check_and_add(b"\x00", 0.0))
        self.assertFalse(t.check_and_add(b"\x10", 0.0))

    def test_slots_power_of_two(self) -> None:
        self.assertRaises(ValueError, SharedTable, bytearray(1000), 0, TableSpec("t", 12))

    def test_keyed_fingerprints(self) -> None:
        """The fingerprint key is per supervisor: the same value lands elsewhere."""
        other = table(self.spec)
        other.initialize(b"q" * 16, 1000.0)
        other.check_and_add(b"same", 1000.0)
        self.table.check_and_add(b"same", 1000.0)
        self.assertNotEqual(bytes(self.buffer), bytes(other._view))

    def test_lock_taken(self) -> None:
        taken = []

        class Lock:
            def __enter__(self) -> None:
                taken.append("in")

            def __exit__(self, *exc: object) -> None:
                taken.append("out")

        t = SharedTable(self.buffer, 0, self.spec, Lock)
        t.check_and_add(b"z", 1000.0)
        self.assertEqual(taken, ["in", "out"])


class LayoutTests(SynchronousTestCase):

    def test_tables_in_one_mapping(self) -> None:
        """Every table in one anonymous shared mapping, as the workers map it; the views
        do not overlap."""
        fd = os.memfd_create("test")
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, mapping_size())
        mapping = mmap.mmap(fd, mapping_size())
        tables = layout(mapping)
        for t in tables.values():
            t.initialize(os.urandom(16), 0.0)
        self.assertTrue(tables["ss-salt"].check_and_add(b"s" * 16, 0.0))
        self.assertTrue(tables["ss-packet-salt"].check_and_add(b"s" * 16, 0.0))
        self.assertTrue(tables["vmess-auth-id"].check_and_add(b"s" * 16, 0.0))
        second = layout(mmap.mmap(fd, mapping_size()))  # another view of the same memory
        self.assertFalse(second["vmess-auth-id"].check_and_add(b"s" * 16, 1.0))
        for t in [*tables.values(), *second.values()]:
            t.release()

    def test_adapters(self) -> None:
        spec = TableSpec("t", 64, period=240.0)
        t = table(spec)
        t.initialize(b"k" * 16, 0.0)
        auth = SharedAuthIDFilter(t)
        self.assertTrue(auth.check_and_add(b"a" * 16, 100, 100.0))
        self.assertFalse(auth.check_and_add(b"a" * 16, 100, 101.0))
        history = SharedSessionHistory(t)
        session = (b"u" * 16, b"k" * 16, b"i" * 16)
        self.assertTrue(history.check_and_add(session, 102.0))
        self.assertFalse(history.check_and_add(session, 103.0))
        salts = SharedSaltFilter(t)
        self.assertTrue(salts.check(b"salt" * 4))
        self.assertFalse(salts.check(b"salt" * 4))
        self.assertEqual(len(auth), 3)

    def test_factories_pick_the_shared_tables(self) -> None:
        """The VMess and Shadowsocks servers use the installed tables (a worker), else
        their own filters (one process)."""
        self.assertIsInstance(auth_id_filter(), AuthIDFilter)
        self.assertIsInstance(salt_filter(), SaltFilter)
        tables = layout(bytearray(mapping_size()))
        sharedreplay.install(tables)
        self.addCleanup(sharedreplay.install, {})
        self.assertIs(auth_id_filter().table, tables["vmess-auth-id"])
        self.assertIs(session_history().table, tables["vmess-session"])
        self.assertIs(salt_filter().table, tables["ss-salt"])
        self.assertIs(salt_filter(packets=True).table, tables["ss-packet-salt"])
