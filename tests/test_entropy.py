"""The random byte pool (vtwist.entropy): each byte handed out once, a forked child starts
afresh."""

from __future__ import annotations

import os
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from vtwist import entropy
from vtwist.entropy import RandomPool, random_bytes


class CountingSource:
    """Stands in for ``os.urandom``: distinct bytes on every call, calls counted."""

    def __init__(self) -> None:
        self.calls = 0
        self.next = 0

    def __call__(self, n: int) -> bytes:
        self.calls += 1
        out = bytes((self.next + i) % 251 for i in range(n))
        self.next += n
        return out


class PoolRefills(SynchronousTestCase):
    def test_each_byte_once_and_refills(self) -> None:
        source = CountingSource()
        pool = RandomPool(size=10)
        with mock.patch.object(entropy.os, "urandom", source):
            taken = [pool.take(4), pool.take(4), pool.take(4), pool.take(10), pool.take(1)]
        self.assertEqual([len(t) for t in taken], [4, 4, 4, 10, 1])
        # 4 + 4 from the first fill; 4 does not fit in the 2 left: a second fill (its first
        # 4); 10 do not fit in the 6 left: a third; 1 more: a fourth
        self.assertEqual(source.calls, 4)
        self.assertEqual(taken[0] + taken[1], bytes(range(8)))
        self.assertEqual(taken[2], bytes(range(10, 14)))
        self.assertEqual(taken[3], bytes(range(20, 30)))
        self.assertEqual(taken[4], bytes([30]))

    def test_one_fill_serves_many_masks(self) -> None:
        source = CountingSource()
        pool = RandomPool()
        with mock.patch.object(entropy.os, "urandom", source):
            masks = [pool.take(4) for _ in range(1024)]
        self.assertEqual(source.calls, 1)
        self.assertEqual(b"".join(masks), CountingSource()(4096))  # in order, none twice


class RandomPoolTests(SynchronousTestCase):
    def test_slices_of_one_block_then_a_new_one(self) -> None:
        pool = RandomPool(64)
        first = pool.take(40)
        block = pool.buffer
        self.assertEqual(first, block[:40])
        self.assertEqual(pool(20), block[40:60])  # callable, the next slice
        fresh = pool.take(8)  # does not fit in the 4 left: a new block
        self.assertIsNot(pool.buffer, block)
        self.assertEqual(fresh, pool.buffer[:8])
        self.assertEqual(len(pool.take(200)), 200)  # larger than a block: its own call
        self.assertEqual(pool.at, 8)

    def test_drop(self) -> None:
        pool = RandomPool(64)
        pool.take(10)
        pool.drop()
        self.assertEqual((pool.buffer, pool.at), (b"", 0))

    def test_forked_child_does_not_repeat_the_parent(self) -> None:
        random_bytes(1)  # the process pool holds a block now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next 16 bytes, then out at once
            try:
                os.write(write, random_bytes(16))
            finally:
                os._exit(0)
        os.close(write)
        child = b""
        while len(child) < 16:
            piece = os.read(read, 16)
            if not piece:
                break
            child += piece
        os.close(read)
        os.waitpid(pid, 0)
        self.assertEqual(len(child), 16)
        self.assertNotEqual(child, random_bytes(16))
