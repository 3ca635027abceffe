"""Every sans-IO codec fuzzed (bounded): random bytes, mutated vectors and every seed
truncated at every offset raise nothing but the codec's own error (:mod:`tests.fuzz`).

The long runs are ``python -m tests.fuzz TARGET --minutes N``. Regressions the fuzzers found
are pinned below.
"""

from __future__ import annotations

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from tests.fuzz.__main__ import main as fuzz_main
from tests.fuzz.__main__ import mutate
from tests.fuzz.targets import TARGETS, Target
from vtwist.transport.ws.layer import WSServerLayer
from vtwist.transport.ws.settings import WSSettings

#: hypothesis examples per target (the slow ones, with real AEAD work per input, fewer)
EXAMPLES = {"vmess-handshake": 40, "shadowsocks": 60, "vmess-body": 60, "ws": 80, "kcp": 80,
            "http": 80, "misc": 80}
#: at most this many truncations of each target's seeds
TRUNCATIONS = 400


@st.composite
def fuzz_input(draw: st.DrawFn, target: Target) -> bytes:
    """Random bytes, or a seed with random edits (the long runs' mutator)."""
    seeds = target.seeds()
    if not seeds or draw(st.booleans()):
        return draw(st.binary(max_size=400))
    import random
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    return mutate(rng, draw(st.sampled_from(seeds)), seeds)


def _check(target: Target, data: bytes, cut: int) -> None:
    try:
        target.run(data, cut)
    except target.allowed:
        pass


def _make(name: str):  # noqa: ANN202 - the test methods
    target = TARGETS[name]

    @settings(max_examples=EXAMPLES.get(name, 150), deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(fuzz_input(target), st.integers(0, 1 << 16))
    def test_fuzz(self: SynchronousTestCase, data: bytes, cut: int) -> None:
        _check(target, data, cut)

    def test_truncated(self: SynchronousTestCase) -> None:
        cases = [(seed, i) for seed in target.seeds() for i in range(len(seed) + 1)]
        step = max(1, len(cases) // TRUNCATIONS)
        self.assertTrue(cases, f"{name} has no seeds")
        for seed, i in cases[::step]:
            _check(target, seed[:i], i // 2)

    test_fuzz.__doc__ = f"{name}: random and mutated inputs raise only the codec's error."
    test_truncated.__doc__ = f"{name}: every seed cut at every offset (up to {TRUNCATIONS})."
    return test_fuzz, test_truncated


class FuzzTests(SynchronousTestCase):
    """One hypothesis test and one truncation test per target."""

    for _name in TARGETS:
        _attr = _name.replace("-", "_")
        locals()[f"test_{_attr}"], locals()[f"test_{_attr}_truncated"] = _make(_name)
    del _name, _attr


class DriverTests(SynchronousTestCase):
    """The long-run driver runs a target for a bounded time and reports no finding."""

    def test_short_run(self) -> None:
        started = time.monotonic()
        self.assertEqual(fuzz_main(["mux", "--minutes", "0.01", "--seed", "1"]), 0)
        self.assertLess(time.monotonic() - started, 10)

    def test_every_codec_has_a_target(self) -> None:
        self.assertLessEqual({"socks", "http", "vmess-instruction", "vmess-handshake",
                              "vmess-body", "vless", "trojan", "shadowsocks", "mux", "kcp",
                              "sniff", "ws", "grpc", "geodata", "dns", "h2-grpc-profiles",
                              "outbound-replies"}, set(TARGETS))


class WebSocketRegressionTests(SynchronousTestCase):
    """Upgrade requests wsproto cannot read get a 400, not a traceback (fuzzer findings)."""

    def answer(self, request: bytes) -> bytes:
        built: list[Protocol] = []

        class App(Protocol):
            def connectionMade(self) -> None:
                built.append(self)

        layer = WSServerLayer(Factory.forProtocol(App), WSSettings(path="/ws"), Clock())
        transport = StringTransport()
        layer.makeConnection(transport)
        layer.dataReceived(request)
        self.assertEqual(built, [])
        self.assertTrue(transport.disconnecting)
        return transport.value()

    def request(self, version: bytes = b"1.1", host: bytes = b"Host: a\r\n",
                connection: bytes = b"Upgrade") -> bytes:
        return (b"GET /ws HTTP/" + version + b"\r\n" + host + b"Upgrade: websocket\r\n"
                b"Connection: " + connection + b"\r\nSec-WebSocket-Key: "
                b"dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")

    def test_non_ascii_connection(self) -> None:
        answer = self.answer(self.request(connection=b"Upgr\x8dade"))
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)

    def test_non_ascii_host(self) -> None:
        answer = self.answer(self.request(host=b"Host: a\xff\r\n"))
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)

    def test_http10_without_host(self) -> None:
        answer = self.answer(self.request(version=b"1.0", host=b""))
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 "), answer)


class LengthCapTests(SynchronousTestCase):
    """No length field makes a decoder hold more than its format's largest unit: 256 KiB of
    input, headers declaring the largest lengths, leave at most ``cap`` bytes buffered (or
    raise the codec's error at once)."""

    def held(self, feed, size, data: bytes, errors: tuple[type[BaseException], ...]  # noqa: ANN001
             ) -> int:
        most = 0
        try:
            for i in range(0, len(data), 1024):
                feed(data[i:i + 1024])
                most = max(most, size())
        except errors:
            pass
        return most

    def test_stream_decoders(self) -> None:
        from tests.fuzz.targets import _ss_account
        from vtwist.proxy.mux.frame import FrameDecoder, MuxError
        from vtwist.proxy.shadowsocks.aead import CipherError, StreamDecoder
        from vtwist.proxy.trojan.codec import PacketDecoder as TrojanPackets
        from vtwist.proxy.trojan.codec import TrojanError
        from vtwist.proxy.vless.codec import PacketDecoder as VLESSPackets
        from vtwist.proxy.vless.codec import VLESSError
        from vtwist.proxy.vmess.body import BodyDecoder, BodyError
        from vtwist.transport.grpc.framing import FramingError, MessageDecoder

        big = b"\xff" * (256 << 10)
        cases = []
        mux = FrameDecoder()
        cases.append(("mux", mux.feed, lambda: mux.buffered, b"\xff\xff" + big, MuxError,
                      2 * 65538))
        body = BodyDecoder(5, 1, bytes(16), bytes(16))  # security none: raw u16 lengths
        cases.append(("vmess body", body.feed, lambda: len(body._buf), big, BodyError, 65538))
        trojan = TrojanPackets()
        cases.append(("trojan udp", trojan.feed, lambda: trojan.buffered,
                      b"\x01\x01\x02\x03\x04\x00\x35\x1f\xff\r\n" + big, TrojanError, 8192 + 64))
        vless = VLESSPackets()
        cases.append(("vless udp", vless.feed, lambda: len(vless.buf), big, VLESSError, 65538))
        ss = StreamDecoder(_ss_account("none"))
        cases.append(("shadowsocks", ss.feed, lambda: ss.buffered, big, CipherError, 0x3FFF + 64))
        grpc = MessageDecoder()
        cases.append(("grpc", grpc.feed, lambda: grpc.pending, b"\x00\xff\xff\xff\xff" + big,
                      FramingError, 0))
        for name, feed, size, data, error, cap in cases:
            self.assertLessEqual(self.held(feed, size, data, (error,)), cap, name)
