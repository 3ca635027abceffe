"""What SECURITY.md promises, checked: a VMess prober sees the same close time whether its
user is unknown or its data is bad; logs never hold a whole UUID; passwords are compared in
constant time for known and unknown users alike; unauthenticated API and metrics listeners
beyond loopback are warned about."""

from __future__ import annotations

import os
import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.test_vmess_server import NOW, POLICY
from vtwist.address import Destination
from vtwist.app.api.setup import is_loopback, warn_exposed
from vtwist.proxy.credentials import password_ok
from vtwist.proxy.guard import ProbeGuard
from vtwist.proxy.vless.settings import VLESSAccount
from vtwist.proxy.vmess.handshake import ClientSession
from vtwist.proxy.vmess.header import seal_request_header
from vtwist.proxy.vmess.ids import format_uuid
from vtwist.proxy.vmess.server import VMessServerFactory, VMessServerState
from vtwist.proxy.vmess.users import Account
from vtwist.testing.doubles import HalfCloseTransport, log_lines
from vtwist.testing.tunnels import RecordingTunnels


class VMessProbeTimingTests(SynchronousTestCase):
    """Every refusal closes at connection start + handshake deadline + the guard's delay."""

    def setUp(self) -> None:
        self.account = Account(os.urandom(16))  # no email: logs must not show its UUID
        self.logs = log_lines(self, "vtwist")

    def close_time(self, data: bytes, previous: bytes = b"") -> float:
        """Seconds from connect to the server's FIN for a client sending ``data`` (after a
        connection that sent ``previous``, for replays), with the guard's RNG fixed."""
        clock = Clock()
        clock.advance(NOW)
        guard = ProbeGuard(min_delay=2, max_delay=8, rng=random.Random(7))
        state = VMessServerState([self.account], guard=guard)
        factory = VMessServerFactory(state, RecordingTunnels(clock), POLICY, tag="in",
                                     now=clock.seconds)
        if previous:
            first = factory.buildProtocol(None)
            first.makeConnection(HalfCloseTransport())
            first.dataReceived(previous)
            guard.rng = random.Random(7)
        proto = factory.buildProtocol(None)
        transport = HalfCloseTransport()
        proto.makeConnection(transport)
        start = clock.seconds()
        if data:
            proto.dataReceived(data)
        self.assertEqual(transport.value(), b"")
        while not transport.writeClosed:
            clock.advance(0.125)
            self.assertLess(clock.seconds() - start, 30)
        self.assertEqual(transport.value(), b"")  # never a byte back
        return clock.seconds() - start

    def test_same_close_time_for_every_refusal(self) -> None:
        good = ClientSession(self.account, Destination.tcp("example.com", 443))
        header = good.request_header(NOW)
        bad_instruction = seal_request_header(self.account.cmd_key, os.urandom(60), int(NOW))
        other_user = ClientSession(Account(os.urandom(16)), Destination.tcp("a.b", 1))
        times = {
            "nothing": self.close_time(b""),
            "random bytes": self.close_time(os.urandom(200)),
            "unknown user": self.close_time(other_user.request_header(NOW)),
            "known user, bad instruction": self.close_time(bad_instruction),
            "known user, truncated header": self.close_time(header[:40]),
            "replayed header": self.close_time(header, previous=header),
        }
        self.assertEqual(len(set(times.values())), 1, times)
        self.assertGreaterEqual(min(times.values()), POLICY.level(0).handshake + 2)

    def test_logs_hold_no_whole_uuid(self) -> None:
        bad = seal_request_header(self.account.cmd_key, os.urandom(60), int(NOW))
        self.close_time(bad)
        text = "\n".join(self.logs)
        self.assertIn(self.account.uuid[:4].hex() + "...", text)
        self.assertNotIn(format_uuid(self.account.uuid), text)
        self.assertNotIn(self.account.uuid.hex(), text)


class LabelTests(SynchronousTestCase):
    """Users without an email are named by their UUID's first 8 hex digits only."""

    def test_vmess_and_vless_labels(self) -> None:
        uuid = bytes.fromhex("b831381d63244d53ad4f8cda48b30811")
        self.assertEqual(Account(uuid).label, "b831381d...")
        self.assertEqual(Account(uuid, email="a@b").label, "a@b")
        self.assertEqual(VLESSAccount(uuid).label, "b831381d...")


class PasswordTests(SynchronousTestCase):
    """One comparison, of equal cost, for unknown users and wrong passwords."""

    def test_password_ok(self) -> None:
        self.assertTrue(password_ok(b"secret", b"secret"))
        self.assertTrue(password_ok("sécret", "sécret"))
        self.assertFalse(password_ok(b"secret", b"secreT"))
        self.assertFalse(password_ok(b"secret", b""))
        self.assertFalse(password_ok(None, b"secret"))
        self.assertFalse(password_ok(None, b"\x00" * 32))  # the stand-in is no password


class ExposureTests(SynchronousTestCase):
    """The API and metrics have no authentication: listening beyond loopback is warned."""

    def test_loopback(self) -> None:
        for listen in ("127.0.0.1", "127.1.2.3", "::1", "localhost", "/run/api.sock", "@api"):
            self.assertTrue(is_loopback(listen), listen)
        for listen in ("0.0.0.0", "::", "192.168.1.1", "example.com"):
            self.assertFalse(is_loopback(listen), listen)

    def test_warning(self) -> None:
        logs = log_lines(self, "vtwist.app.api")
        self.assertFalse(warn_exposed("the metrics endpoint", "127.0.0.1"))
        self.assertEqual(logs, [])
        self.assertTrue(warn_exposed("the metrics endpoint", "0.0.0.0"))
        self.assertEqual(len(logs), 1)
        self.assertIn("without authentication", logs[0])


class OtherProbeTimingTests(SynchronousTestCase):
    """Shadowsocks, and Trojan and VLESS without fallbacks: the same close time for every
    refusal, whether the prober's user/key is unknown or its data is bad."""

    def close_time(self, build, data: bytes, previous: bytes = b"") -> float:  # noqa: ANN001
        clock = Clock()
        clock.advance(NOW)
        guard = ProbeGuard(min_delay=2, max_delay=8, rng=random.Random(7))
        factory = build(RecordingTunnels(clock), guard)
        if previous:
            first = factory.buildProtocol(None)
            first.makeConnection(HalfCloseTransport())
            first.dataReceived(previous)
            guard.rng = random.Random(7)
        proto = factory.buildProtocol(None)
        transport = HalfCloseTransport()
        proto.makeConnection(transport)
        start = clock.seconds()
        if data:
            proto.dataReceived(data)
        while not transport.writeClosed:
            clock.advance(0.125)
            self.assertLess(clock.seconds() - start, 30)
        self.assertEqual(transport.value(), b"")
        return clock.seconds() - start

    def assertSame(self, times: dict[str, float]) -> None:
        self.assertEqual(len(set(times.values())), 1, times)
        self.assertGreaterEqual(min(times.values()), POLICY.level(0).handshake + 2)

    def test_shadowsocks(self) -> None:
        from vtwist.proxy.shadowsocks.aead import Account as SSAccount
        from vtwist.proxy.shadowsocks.aead import StreamEncoder
        from vtwist.proxy.shadowsocks.codec import ClientStream
        from vtwist.proxy.shadowsocks.server import ShadowsocksServerFactory
        from vtwist.proxy.shadowsocks.settings import ShadowsocksInboundSettings
        account = SSAccount.from_password("aes-128-gcm", "secret")

        def build(tunnels, guard):  # noqa: ANN001, ANN202
            settings = ShadowsocksInboundSettings(account, "", 0, ("tcp",))
            return ShadowsocksServerFactory(tunnels, settings, POLICY, "ss", guard=guard)

        good = b"".join(ClientStream(account, Destination.tcp("example.com", 443))
                        .encode(b"hello"))
        wrong_key = b"".join(ClientStream(SSAccount.from_password("aes-128-gcm", "other"),
                                          Destination.tcp("example.com", 443)).encode(b"x"))
        bad_address = b"".join(StreamEncoder(account).encode(b"\x09not an address"))
        self.assertSame({
            "nothing": self.close_time(build, b""),
            "random bytes": self.close_time(build, os.urandom(200)),
            "wrong password": self.close_time(build, wrong_key),
            "right password, bad address": self.close_time(build, bad_address),
            "salt only": self.close_time(build, good[:16]),
            "replayed stream": self.close_time(build, good, previous=good),
        })

    def test_trojan(self) -> None:
        from vtwist.proxy.trojan.codec import CMD_TCP, encode_request, password_key
        from vtwist.proxy.trojan.server import TrojanServerFactory
        from vtwist.proxy.trojan.settings import TrojanInboundSettings, TrojanUser

        def build(tunnels, guard):  # noqa: ANN001, ANN202
            return TrojanServerFactory(TrojanInboundSettings([TrojanUser("alpha")]), tunnels,
                                       POLICY, tag="trojan", guard=guard)

        key = password_key("alpha")
        self.assertSame({
            "nothing": self.close_time(build, b""),
            "random bytes": self.close_time(build, os.urandom(200)),
            "wrong password": self.close_time(build, encode_request(
                password_key("beta"), CMD_TCP, Destination.tcp("example.com", 443))),
            "right password, bad address": self.close_time(build, key + b"\r\n\x01\x09xx"),
            "half a key": self.close_time(build, key[:30]),
        })

    def test_vless(self) -> None:
        from vtwist.proxy.vless.codec import CMD_TCP, encode_request
        from vtwist.proxy.vless.server import VLESSServerFactory
        uuid = os.urandom(16)

        def build(tunnels, guard):  # noqa: ANN001, ANN202
            return VLESSServerFactory([VLESSAccount(uuid)], tunnels, POLICY, "vless",
                                      guard=guard)

        dest = Destination.tcp("example.com", 443)
        good = encode_request(uuid, CMD_TCP, dest)
        self.assertSame({
            "nothing": self.close_time(build, b""),
            "random bytes": self.close_time(build, os.urandom(200)),
            "unknown user": self.close_time(build, encode_request(os.urandom(16), CMD_TCP,
                                                                  dest)),
            "known user, bad command": self.close_time(build, good[:18] + b"\x00\x09"
                                                       + good[20:]),
            "truncated": self.close_time(build, good[:10]),
        })
