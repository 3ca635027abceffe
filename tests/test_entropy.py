"""The random byte pool (vtwist.entropy): each byte handed out once, a forked child starts
afresh."""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from vtwist.entropy import RandomPool, random_bytes


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
