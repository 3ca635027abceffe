"""The ws client's random bytes (masking keys, Sec-WebSocket-Key) come from a pool filled by
``os.urandom``: every byte handed out once, a refill when the rest is too short."""

from __future__ import annotations

import base64
from unittest import mock

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from vtwist.testing.doubles import Recorder
from vtwist.transport.ws import layer as ws_layer
from vtwist.transport.ws.frames import FrameDecoder
from vtwist.transport.ws.settings import WSSettings


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


class Pool(SynchronousTestCase):
    def test_each_byte_once_and_refills(self) -> None:
        source = CountingSource()
        pool = ws_layer.RandomPool(size=10)
        with mock.patch.object(ws_layer.os, "urandom", source):
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
        pool = ws_layer.RandomPool()
        with mock.patch.object(ws_layer.os, "urandom", source):
            masks = [pool.take(4) for _ in range(1024)]
        self.assertEqual(source.calls, 1)
        self.assertEqual(b"".join(masks), CountingSource()(4096))  # in order, none twice


    def test_a_forked_child_does_not_reuse_the_parents_bytes(self) -> None:
        import os

        ws_layer.RANDOM.take(4)  # the pool holds bytes now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its next bytes are not the parent's next ones
            try:
                os.write(write, ws_layer.RANDOM.take(16))
            finally:
                os._exit(0)
        os.close(write)
        child = os.read(read, 16)
        os.close(read)
        os.waitpid(pid, 0)
        self.assertEqual(len(child), 16)
        self.assertNotEqual(child, ws_layer.RANDOM.take(16))


class ClientUsesThePool(SynchronousTestCase):
    def test_key_and_masks_from_the_pool(self) -> None:
        """The upgrade's key and each frame's mask are fresh bytes from the pool; the frames
        decode."""
        source = CountingSource()
        with mock.patch.object(ws_layer, "RANDOM", ws_layer.RandomPool(size=64)), \
                mock.patch.object(ws_layer.os, "urandom", source):
            client = ws_layer.WSClientLayer(Factory.forProtocol(Recorder), None, "example.test",
                                            WSSettings(path="/p"), Clock())
            wire = StringTransport()
            client.makeConnection(wire)
            key = client.key
            client.frames = FrameDecoder(client=True)  # as after a 101
            client.write(b"one")
            client.write(b"two")
        self.assertEqual(base64.b64decode(key), bytes(range(16)))
        sent = wire.value()
        frames = sent[sent.index(b"\r\n\r\n") + 4:]
        self.assertEqual(frames[2:6], bytes(range(16, 20)))  # the first mask
        self.assertEqual(frames[11:15], bytes(range(20, 24)))  # the second
        events = FrameDecoder(client=False).feed(frames)
        self.assertEqual(b"".join(v for _, v in events), b"onetwo")
        self.assertEqual(source.calls, 1)
