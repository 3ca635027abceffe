"""The ws client's random bytes (masking keys, Sec-WebSocket-Key) come from the process's
pool (vtwist.entropy, tested in test_entropy)."""

from __future__ import annotations

import base64
from unittest import mock

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.test_entropy import CountingSource
from vtwist import entropy
from vtwist.entropy import RandomPool
from vtwist.testing.doubles import Recorder
from vtwist.transport.ws import layer as ws_layer
from vtwist.transport.ws.frames import FrameDecoder
from vtwist.transport.ws.settings import WSSettings


class ClientUsesThePool(SynchronousTestCase):
    def test_key_and_masks_from_the_pool(self) -> None:
        """The upgrade's key and each frame's mask are fresh bytes from the pool; the frames
        decode."""
        source = CountingSource()
        with mock.patch.object(ws_layer, "RANDOM", RandomPool(size=64)), \
                mock.patch.object(entropy.os, "urandom", source):
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
