"""The reverse proxy's pieces: the control message, the in-memory pipe, the ``reverse``
config section, the bridge's connection policy and the portal's picking and draining."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from vtwist.app.reverse.control import (
    ACTIVE,
    DRAIN,
    ControlError,
    decode_control,
    encode_control,
)
from vtwist.app.reverse.pipe import PIPE_BUFFER, connect_pair
from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config
from vtwist.testing.doubles import HalfCloseRecorder, Recorder


class ControlTests(SynchronousTestCase):
    def test_wire(self) -> None:
        self.assertEqual(encode_control(DRAIN, b"ab"), b"\x08\x01\x9a\x06\x02ab")
        self.assertEqual(encode_control(ACTIVE, b"xyz"), b"\x9a\x06\x03xyz")
        self.assertEqual(encode_control(ACTIVE), b"")

    def test_decode(self) -> None:
        self.assertEqual(decode_control(b""), ACTIVE)
        self.assertEqual(decode_control(encode_control(DRAIN, bytes(63))), DRAIN)
        self.assertEqual(decode_control(b"\x10\x05" + encode_control(DRAIN)), DRAIN)

    def test_garbage(self) -> None:
        for bad in (b"\xff\xff", b"\x08", b"\x9a\x06\x05ab"):
            self.assertRaises(ControlError, decode_control, bad)

    @settings(deadline=None, max_examples=300)
    @given(st.binary(max_size=80))
    def test_fuzz(self, data: bytes) -> None:
        try:
            decode_control(data)
        except ControlError:
            pass


class _Producer:
    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"

    def stopProducing(self) -> None:
        self.state = "stopped"


class PipeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()

    def pair(self, one: Protocol | None = None, two: Protocol | None = None) -> Any:
        self.one = one or HalfCloseRecorder()
        self.two = two or HalfCloseRecorder()
        return connect_pair(self.clock, self.one, self.two)

    def test_data_on_the_next_turn(self) -> None:
        a, b = self.pair()
        a.write(b"hello ")
        a.writeSequence([b"wor", b"ld"])
        self.assertEqual(bytes(self.two.data), b"")
        self.clock.advance(0)
        self.assertEqual(bytes(self.two.data), b"hello world")
        b.write(b"back")
        self.clock.advance(0)
        self.assertEqual(bytes(self.one.data), b"back")

    def test_half_close(self) -> None:
        a, b = self.pair()
        a.write(b"request")
        a.loseWriteConnection()
        a.write(b"ignored")
        self.clock.advance(0)
        self.assertEqual(bytes(self.two.data), b"request")
        self.assertTrue(self.two.readLost)
        self.assertTrue(self.one.writeLost)
        b.write(b"answer")
        b.loseConnection()
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(bytes(self.one.data), b"answer")
        self.assertTrue(self.one.lost.check(ConnectionDone))
        self.assertTrue(self.two.lost.check(ConnectionDone))

    def test_close_without_half_close_support(self) -> None:
        a, b = self.pair(Recorder(), Recorder())
        a.write(b"last words")
        a.loseConnection()
        self.clock.advance(0)
        self.clock.advance(0)
        self.assertEqual(bytes(self.two.data), b"last words")
        self.assertTrue(self.two.lost.check(ConnectionDone))
        self.assertTrue(self.one.lost.check(ConnectionDone))

    def test_abort(self) -> None:
        a, b = self.pair()
        a.write(b"dropped")
        b.abortConnection()
        self.clock.advance(0)
        self.assertEqual(bytes(self.two.data), b"")
        self.assertTrue(self.one.lost.check(ConnectionAborted))
        self.assertTrue(self.two.lost.check(ConnectionAborted))

    def test_backpressure(self) -> None:
        a, b = self.pair()
        producer = _Producer()
        a.registerProducer(producer, True)
        b.pauseProducing()  # two's consumer is full
        for _ in range(PIPE_BUFFER // 4096):
            a.write(b"x" * 4096)
        self.clock.advance(0)
        self.assertEqual(producer.state, "producing")
        a.write(b"x" * 4096)
        self.assertEqual(producer.state, "paused")
        self.assertEqual(len(self.two.data), 0)
        b.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(len(self.two.data), PIPE_BUFFER + 4096)
        self.assertEqual(producer.state, "producing")

    def test_reader_half_close_after_paused_data(self) -> None:
        a, b = self.pair()
        b.pauseProducing()
        a.write(b"held")
        a.loseWriteConnection()
        self.clock.advance(0)
        self.assertFalse(self.two.readLost)
        b.resumeProducing()
        self.clock.advance(0)
        self.assertEqual(bytes(self.two.data), b"held")
        self.assertTrue(self.two.readLost)


def _config(reverse: Any, routing: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"outbounds": [{"protocol": "freedom", "tag": "direct"}],
                           "reverse": reverse}
    if routing is not None:
        out["routing"] = {"rules": routing}
    return out


class ConfigTests(SynchronousTestCase):
    def test_parse(self) -> None:
        config = parse_config(_config(
            {"bridges": [{"tag": "b", "domain": "Private.Example"}],
             "portals": [{"tag": "p", "domain": "x.example"}]},
            [{"type": "field", "inboundTag": ["in"], "outboundTag": "p"}]))
        self.assertEqual([(b.tag, b.domain) for b in config.reverse.bridges],
                         [("b", "private.example")])
        self.assertEqual([(p.tag, p.domain) for p in config.reverse.portals],
                         [("p", "x.example")])
        self.assertEqual(config.warnings, [])

    def test_empty_tag_or_domain(self) -> None:
        for reverse, path in (({"bridges": [{"domain": "a"}]}, "reverse.bridges[0].tag"),
                              ({"portals": [{"tag": "p"}]}, "reverse.portals[0].domain")):
            with self.assertRaises(ConfigError) as cm:
                parse_config(_config(reverse))
            self.assertIn(path, str(cm.exception))

    def test_portal_tag_is_taken(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            parse_config(_config({"portals": [{"tag": "direct", "domain": "a"}]}))
        self.assertIn("direct", str(cm.exception))

    def test_unknown_key_warns(self) -> None:
        config = parse_config(_config({"bridges": [{"tag": "b", "domain": "a", "x": 1}]}))
        self.assertEqual(len(config.warnings), 1)
        self.assertIn("reverse.bridges[0].x", config.warnings[0])


class ParseWithoutTwistedTests(SynchronousTestCase):
    def test_reverse_parses_without_twisted(self) -> None:
        import json
        import os
        import subprocess
        import sys

        code = ("import json, sys\n"
                "from vtwist.config.loader import parse_config\n"
                "c = parse_config(json.loads(sys.argv[1]))\n"
                "assert c.reverse.portals[0].tag == 'p'\n"
                "print(json.dumps(sorted(m for m in sys.modules if m.startswith('twisted'))))\n")
        data = _config({"bridges": [{"tag": "b", "domain": "a"}],
                        "portals": [{"tag": "p", "domain": "a"}]})
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        result = subprocess.run([sys.executable, "-c", code, json.dumps(data)],
                                capture_output=True, text=True, timeout=60, check=False,
                                env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout.strip().splitlines()[-1]), [])
