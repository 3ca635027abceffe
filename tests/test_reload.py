"""Hot reload: the pure diff, and a running service reloaded under live transfers
(sha256-checked), with users, ports, settings and outbounds changing, a broken config, and
log files reopened; JSON log lines."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.netutil import accepts, free_port, wait_until
from tests.services import start_service
from vtwist.address import Destination
from vtwist.app.reload import (
    ADD,
    KEEP,
    REMOVE,
    RESTART,
    SWAP,
    USERS,
    Reloader,
    diff_inbounds,
    reusable_outbounds,
)
from vtwist.config.loader import parse_config
from vtwist.config.model import LogConfig
from vtwist.logsetup import LogSwitch
from vtwist.proxy.socks.client import SocksClientEndpoint
from vtwist.proxy.vmess.client import VMessClientEndpoint
from vtwist.proxy.vmess.users import Account
from vtwist.testing.doubles import Echo, LogCapture
from vtwist.tunnel.access import AccessLog

USER_A = str(uuid.UUID(int=0xA))
USER_B = str(uuid.UUID(int=0xB))


def socks(port: int, tag: str = "socks", **settings: Any) -> dict[str, Any]:
    """A SOCKS inbound on 127.0.0.1:port."""
    return {"tag": tag, "protocol": "socks", "listen": "127.0.0.1", "port": port,
            "settings": settings}


def vmess(port: int, *ids: str, tag: str = "vm") -> dict[str, Any]:
    """A VMess inbound with users ``ids`` (email: the id's last digit + @x)."""
    return {"tag": tag, "protocol": "vmess", "listen": "127.0.0.1", "port": port,
            "settings": {"clients": [{"id": i, "email": f"{i[-1]}@x"} for i in ids]}}


def config(*inbounds: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A whole config: the inbounds, a freedom outbound (and ``extra`` sections)."""
    return {"log": {"loglevel": "warning"}, "inbounds": list(inbounds),
            "outbounds": extra.pop("outbounds", [{"tag": "direct", "protocol": "freedom"}]),
            **extra}


class DiffTests(SynchronousTestCase):
    """:func:`diff_inbounds` and :func:`reusable_outbounds` on parsed configs."""

    def kinds(self, old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
        a, b = parse_config(old), parse_config(new)
        changes = diff_inbounds(a.inbounds, b.inbounds, a.policy != b.policy)
        return [(c.kind, c.old, c.new) for c in changes]

    def test_kinds(self) -> None:
        base = config(socks(1080), vmess(1081, USER_A), socks(1082, tag="gone"))
        new = config(socks(1080), vmess(1081, USER_A, USER_B), socks(2000, tag="new"))
        self.assertEqual(self.kinds(base, new),
                         [(KEEP, 0, 0), (USERS, 1, 1), (ADD, None, 2), (REMOVE, 2, None)])

    def test_listener_changes_restart(self) -> None:
        base = config(socks(1080), vmess(1081, USER_A))
        moved = config(socks(1090), {**vmess(1081, USER_A), "listen": "127.0.0.2"})
        self.assertEqual(self.kinds(base, moved), [(RESTART, 0, 0), (RESTART, 1, 1)])
        ws = config(socks(1080), {**vmess(1081, USER_A), "streamSettings": {"network": "ws"}})
        self.assertEqual(self.kinds(base, ws), [(KEEP, 0, 0), (RESTART, 1, 1)])
        other = config({**socks(1080), "protocol": "http"}, vmess(1081, USER_A))
        self.assertEqual(self.kinds(base, other), [(RESTART, 0, 0), (KEEP, 1, 1)])

    def test_settings_swap(self) -> None:
        base = config(socks(1080), vmess(1081, USER_A))
        auth = config(socks(1080, auth="password", accounts=[{"user": "u", "pass": "p"}]),
                      {**vmess(1081, USER_A), "sniffing": {"enabled": True,
                                                          "destOverride": ["tls"]}})
        self.assertEqual(self.kinds(base, auth), [(SWAP, 0, 0), (SWAP, 1, 1)])
        policy = {**base, "policy": {"levels": {"0": {"connIdle": 60}}}}
        self.assertEqual(self.kinds(base, policy), [(SWAP, 0, 0), (SWAP, 1, 1)])

    def test_untagged_match_by_address(self) -> None:
        a = socks(1080, tag="")
        b = socks(1081, tag="")
        self.assertEqual(self.kinds(config(a, b), config(b, a)), [(KEEP, 1, 0), (KEEP, 0, 1)])

    def test_outbounds_reused(self) -> None:
        old = parse_config(config(socks(1080), outbounds=[
            {"tag": "direct", "protocol": "freedom"},
            {"tag": "via", "protocol": "socks", "settings": {"servers": [
                {"address": "127.0.0.1", "port": 1}]}},
            {"tag": "chained", "protocol": "freedom", "proxySettings": {"tag": "via"}},
            {"tag": "block", "protocol": "blackhole"}]))
        new = parse_config(config(socks(1080), outbounds=[
            {"tag": "block", "protocol": "blackhole"},
            {"tag": "via", "protocol": "socks", "settings": {"servers": [
                {"address": "127.0.0.1", "port": 2}]}},
            {"tag": "chained", "protocol": "freedom", "proxySettings": {"tag": "via"}},
            {"tag": "direct", "protocol": "freedom", "settings": {"domainStrategy": "UseIP"}}]))
        # block kept (moved); via changed, so chained through it is rebuilt; direct changed
        self.assertEqual(reusable_outbounds(old.outbounds, new.outbounds), {0: 3})


class Paced(Protocol):
    """Sends ``chunks`` random 16 KiB blocks, one every ``interval`` s, and hashes the echo;
    ``halfway`` fires when half came back, ``done`` when all did (then it closes)."""

    def __init__(self, chunks: int = 120, interval: float = 0.01,
                 gate: defer.Deferred[Any] | None = None) -> None:
        self.chunks, self.interval = chunks, interval
        #: with a gate, the second half waits for it to fire (a reload in between)
        self.gate, self.half = gate, chunks // 2
        self.total = chunks * 16384
        self.sent, self.got = hashlib.sha256(), hashlib.sha256()
        self.received = 0
        self.halfway: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[Any] = defer.Deferred()
        self.lost: Any = None

    def connectionMade(self) -> None:
        self.loop = LoopingCall(self._send)
        self.loop.start(self.interval)

    def _send(self) -> None:
        if self.gate is not None and not self.gate.called and self.chunks <= self.half:
            return
        if self.chunks == 0:
            self.loop.stop()
            return
        block = os.urandom(16384)
        self.sent.update(block)
        self.transport.write(block)
        self.chunks -= 1

    def dataReceived(self, data: bytes) -> None:
        self.got.update(data)
        self.received += len(data)
        if self.received * 2 >= self.total and not self.halfway.called:
            self.halfway.callback(None)
        if self.received >= self.total:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = reason
        if self.loop.running:
            self.loop.stop()
        if not self.done.called:
            self.done.callback(self)


class Probe(Protocol):
    """Sends one message; ``done`` fires with what came back when the connection ends or
    as soon as the echo arrived."""

    def __init__(self, message: bytes = b"ping") -> None:
        self.message = message
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.message)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.data == self.message:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if not self.done.called:
            self.done.callback(self.data)


class ReloadTests(TestCase):
    """A running service reloaded in process (real sockets)."""

    timeout = 60

    def setUp(self) -> None:
        port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.echo = port.getHost().port
        self.logs = LogCapture()
        self.addCleanup(self.logs.stop)

    async def start(self, data: dict[str, Any]) -> Any:
        self.current = data
        service = await start_service(data, self)
        service.reloader = Reloader(service, lambda: self.current)
        return service

    async def reload(self, service: Any, data: Any) -> Any:
        self.current = data
        return await service.reloader.reload()

    def via_socks(self, port: int, proto: Protocol, **kw: Any) -> defer.Deferred[Any]:
        endpoint = SocksClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                       Destination.tcp("127.0.0.1", self.echo), **kw)
        return endpoint.connect(Factory.forProtocol(lambda: proto))

    def via_vmess(self, port: int, user: str, proto: Protocol) -> defer.Deferred[Any]:
        endpoint = VMessClientEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                       Account.from_text(user),
                                       Destination.tcp("127.0.0.1", self.echo),
                                       "aes-128-gcm", reactor=reactor)
        return endpoint.connect(Factory.forProtocol(lambda: proto))

    async def echoes(self, connect: Any) -> bytes:
        probe = Probe()
        await connect(probe)
        return await probe.done

    def assertIntact(self, paced: Paced) -> None:
        self.assertEqual(paced.received, paced.total)
        self.assertEqual(paced.got.hexdigest(), paced.sent.hexdigest())

    async def test_kept_inbound_keeps_socket_and_transfer(self) -> None:
        """Routing, outbounds and other inbounds change: the socks inbound keeps its socket
        and the transfer running through it (sha256); new connections follow the new
        routing; an added inbound listens."""
        p, q = free_port(), free_port()
        service = await self.start(config(socks(p)))
        [listener] = service.inbound_services
        port_before = listener.port
        paced = Paced()
        await self.via_socks(p, paced)
        await paced.halfway
        result = await self.reload(service, config(
            socks(p), socks(q, tag="second"),
            outbounds=[{"tag": "block", "protocol": "blackhole"},
                       {"tag": "direct", "protocol": "freedom"}],
            routing={"rules": [{"type": "field", "inboundTag": ["second"],
                                "outboundTag": "direct"}]}))
        self.assertEqual((result.inbounds[KEEP], result.inbounds[ADD]), (1, 1))
        self.assertIs(service.inbound_services[0].port, port_before)
        await paced.done
        self.assertIntact(paced)
        # the new default outbound (blackhole) takes the socks inbound's new connections
        self.assertEqual(await self.echoes(lambda pr: self.via_socks(p, pr)), b"")
        self.assertEqual(await self.echoes(lambda pr: self.via_socks(q, pr)), b"ping")

    async def test_added_handlers_get_counters(self) -> None:
        """With ``stats``, an inbound and an outbound a reload adds get their counters."""
        extra = {"stats": {}, "policy": {"system": {"statsInboundUplink": True,
                                                    "statsOutboundDownlink": True}}}
        p, q = free_port(), free_port()
        service = await self.start(config(socks(p), **extra))
        await self.reload(service, config(socks(p), socks(q, tag="second"), outbounds=[
            {"tag": "direct", "protocol": "freedom"},
            {"tag": "hole", "protocol": "blackhole"}], **extra))
        counters = service.tunnels.stats.counters
        self.assertIn("inbound>>>second>>>traffic>>>uplink", counters)
        self.assertIn("outbound>>>hole>>>traffic>>>downlink", counters)

    async def test_changed_port_drains(self) -> None:
        """A moved inbound listens on its new port; the old port stops accepting while the
        transfer on it completes."""
        p, q = free_port(), free_port()
        service = await self.start(config(socks(p)))
        paced = Paced()
        await self.via_socks(p, paced)
        await paced.halfway
        result = await self.reload(service, config(socks(q)))
        self.assertEqual(result.inbounds[RESTART], 1)
        self.assertFalse(accepts(p))
        self.assertEqual(await self.echoes(lambda pr: self.via_socks(q, pr)), b"ping")
        await paced.done
        self.assertIntact(paced)

    async def test_inbounds_trade_ports(self) -> None:
        """Two inbounds trade ports: each old listener lets go first, both new ones listen,
        with their own settings (the password one moved)."""
        p, q = free_port(), free_port()
        auth = {"auth": "password", "accounts": [{"user": "u", "pass": "p"}]}
        service = await self.start(config(socks(p, tag="a"), socks(q, tag="b", **auth)))
        result = await self.reload(service, config(socks(q, tag="a"),
                                                   socks(p, tag="b", **auth)))
        self.assertEqual(result.inbounds[RESTART], 2)
        self.assertEqual(await self.echoes(lambda pr: self.via_socks(q, pr)), b"ping")
        self.assertEqual(await self.echoes(
            lambda pr: self.via_socks(p, pr, username=b"u", password=b"p")), b"ping")
        self.assertEqual([s.failure for s in service.inbound_services], [None, None])

    async def test_removed_drain_closes_after_idle(self) -> None:
        """A removed inbound's connections are closed at the policy's idle time."""
        p = free_port()
        service = await self.start(config(socks(p), socks(free_port(), tag="other"),
                                          policy={"levels": {"0": {"connIdle": 1}}}))
        probe = Probe(b"")
        await self.via_socks(p, probe)
        await self.reload(service, config(socks(free_port(), tag="other"),
                                          policy={"levels": {"0": {"connIdle": 1}}}))
        self.assertFalse(accepts(p))
        self.assertEqual(await probe.done, b"")  # closed by the drain, not hanging

    async def test_settings_swap_keeps_socket(self) -> None:
        """New socks settings (password auth) apply to new connections on the same socket;
        the live transfer goes on."""
        p = free_port()
        service = await self.start(config(socks(p)))
        port_before = service.inbound_services[0].port
        paced = Paced()
        await self.via_socks(p, paced)
        await paced.halfway
        result = await self.reload(service, config(
            socks(p, auth="password", accounts=[{"user": "u", "pass": "p"}])))
        self.assertEqual(result.inbounds[SWAP], 1)
        self.assertIs(service.inbound_services[0].port, port_before)
        from vtwist.transport.layer import LayerHandshakeError

        with self.assertRaises(LayerHandshakeError) as refused:
            await self.echoes(lambda pr: self.via_socks(p, pr))
        self.assertIn("accepts none of the offered auth methods", str(refused.exception))
        self.assertEqual(await self.echoes(
            lambda pr: self.via_socks(p, pr, username=b"u", password=b"p")), b"ping")
        await paced.done
        self.assertIntact(paced)

    async def test_users_change(self) -> None:
        """Users added by a reload connect at once; a removed user's live transfer goes on
        while its new connections are refused."""
        p = free_port()
        service = await self.start(config(vmess(p, USER_A)))
        paced = Paced()
        await self.via_vmess(p, USER_A, paced)
        await paced.halfway
        self.assertEqual(await self.echoes(lambda pr: self.via_vmess(p, USER_B, pr)), b"")
        result = await self.reload(service, config(vmess(p, USER_B)))
        self.assertEqual((result.inbounds[USERS], result.users_added,
                          result.users_removed), (1, 1, 1))
        self.assertEqual(await self.echoes(lambda pr: self.via_vmess(p, USER_B, pr)), b"ping")
        self.assertEqual(await self.echoes(lambda pr: self.via_vmess(p, USER_A, pr)), b"")
        await paced.done
        self.assertIntact(paced)

    async def test_broken_config_changes_nothing(self) -> None:
        """A config that does not parse (or names a missing file) changes nothing: one
        error line, same config, still serving."""
        p = free_port()
        service = await self.start(config(socks(p)))
        before = service.config
        for broken in ({"inbounds": [socks(p)], "outbounds": []},
                       config({**socks(free_port()), "protocol": "nope"}),
                       config(socks(free_port()), {
                           "tag": "t", "protocol": "vmess", "port": free_port(),
                           "settings": {"clients": [{"id": USER_A}]},
                           "streamSettings": {"security": "tls", "tlsSettings": {
                               "certificates": [{"certificateFile": "/nonexistent.pem",
                                                 "keyFile": "/nonexistent.key"}]}}})):
            self.logs.events.clear()
            self.assertIsNone(await self.reload(service, broken))
            errors = [e for e in self.logs.lines(LogLevel.error) if "reload" in e]
            self.assertEqual(len(errors), 1, errors)
            self.assertIn("the running config stays", errors[0])
        self.assertIs(service.config, before)
        self.assertEqual(await self.echoes(lambda pr: self.via_socks(p, pr)), b"ping")

    async def test_log_files_reopen(self) -> None:
        """A reload reopens the access log: after a rename (logrotate), lines go to a new
        file at the configured path."""
        tmp = tempfile.mkdtemp()
        path = os.path.join(tmp, "access.log")
        p = free_port()
        data = config(socks(p))
        data["log"] = {"loglevel": "warning", "access": path}
        service = await self.start(data)
        service.logs = LogSwitch(service.config.log, stdout=None)
        globalLogPublisher.addObserver(service.logs)
        self.addCleanup(globalLogPublisher.removeObserver, service.logs)
        await self.echoes(lambda pr: self.via_socks(p, pr))
        os.rename(path, path + ".1")
        await self.reload(service, data)
        await self.echoes(lambda pr: self.via_socks(p, pr))
        await wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 0,
                         "no new access log")
        for name in (path, path + ".1"):  # one accepted line each (a close line may follow)
            with open(name) as f:
                lines = [line for line in f if " accepted " in line]
            self.assertEqual(len(lines), 1, (name, lines))


class JSONLogTests(SynchronousTestCase):
    """``log.format: json``: one JSON object per line, access fields as keys."""

    def test_access_lines(self) -> None:
        tmp = tempfile.mkdtemp()
        access, error = os.path.join(tmp, "a.log"), os.path.join(tmp, "e.log")
        switch = LogSwitch(LogConfig("info", access, error, "json"), stdout=None)
        globalLogPublisher.addObserver(switch)
        try:
            log = AccessLog()
            log.accepted("127.0.0.1:5000", Destination.tcp("example.com", 443), "in", "out",
                         "a@b")
            log.rejected("127.0.0.1:5001", "vmess", "unknown user")
            from twisted.logger import Logger

            Logger(namespace="vtwist.test").info("hello {who}", who="you")
        finally:
            globalLogPublisher.removeObserver(switch)
            switch.reopen()  # closes the files
        with open(access) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(len(lines), 2)
        self.assertEqual({k: lines[0][k] for k in (
            "status", "source", "destination", "inbound", "outbound", "email")},
            {"status": "accepted", "source": "127.0.0.1:5000",
             "destination": "tcp:example.com:443", "inbound": "in", "outbound": "out",
             "email": "a@b"})
        self.assertEqual(lines[0]["text"],
                         "from 127.0.0.1:5000 accepted tcp:example.com:443 [in >> out] "
                         "email: a@b")
        self.assertEqual((lines[1]["status"], lines[1]["reason"]),
                         ("rejected", "unknown user"))
        with open(error) as f:
            errors = [json.loads(line) for line in f]
        self.assertEqual([(e["text"], e["who"]) for e in errors if
                          e["log_namespace"] == "vtwist.test"], [("hello you", "you")])

    def test_format_parsed(self) -> None:
        self.assertEqual(parse_config(config(socks(1080), log={"format": "JSON"})).log.format,
                         "json")
        from vtwist.config.errors import ConfigError

        with self.assertRaises(ConfigError) as e:
            parse_config(config(socks(1080), log={"format": "xml"}))
        self.assertIn("log.format", str(e.exception))


class UserSetTests(SynchronousTestCase):
    """The one user-changing path on VLESS and Trojan inbounds too (vmess: the e2e tests),
    with accounts made from V2Ray's protobuf users as HandlerService makes them."""

    def setUp(self) -> None:
        from twisted.internet.task import Clock

        from vtwist.service import build_service

        self.service = build_service(parse_config(config(
            {"tag": "vl", "protocol": "vless", "port": 1, "listen": "127.0.0.1",
             "settings": {"decryption": "none", "clients": [{"id": USER_A, "email": "a@x"}]}},
            {"tag": "tr", "protocol": "trojan", "port": 2, "listen": "127.0.0.1",
             "settings": {"clients": [{"password": "alpha", "email": "a@x"}]}},
            {"tag": "ss", "protocol": "shadowsocks", "port": 3, "listen": "127.0.0.1",
             "settings": {"method": "aes-128-gcm", "password": "p"}})), Clock())

    def account(self, protocol: str, message: Any, email: str) -> Any:
        from vtwist.app.api.handler_service import HandlerService
        from vtwist.app.api.v2raypb import common_protocol_user_pb2, common_serial_typed_message_pb2

        user = common_protocol_user_pb2.User(
            email=email, level=1, account=common_serial_typed_message_pb2.TypedMessage(
                type=message.DESCRIPTOR.full_name, value=message.SerializeToString()))
        return HandlerService._account(protocol, user)

    def test_vless_and_trojan(self) -> None:
        from vtwist.app.api.v2raypb import proxy_trojan_config_pb2, proxy_vless_account_pb2
        from vtwist.app.users import UserError, add_user, remove_user, user_set

        vless_factory = self.service.inbound_groups[0][0].factory
        trojan_factory = self.service.inbound_groups[1][0].factory
        vless = user_set("vless", vless_factory)
        trojan = user_set("trojan", trojan_factory)
        b = self.account("vless", proxy_vless_account_pb2.Account(id=USER_B), "b@x")
        add_user(vless, b)
        self.assertIs(vless_factory.users[uuid.UUID(USER_B).bytes], b)
        self.assertEqual((b.level, b.email), (1, "b@x"))
        with self.assertRaises(UserError):
            add_user(vless, self.account("vless", proxy_vless_account_pb2.Account(
                id=str(uuid.uuid4())), "B@X"))
        t = self.account("trojan", proxy_trojan_config_pb2.Account(password="beta"), "b@x")
        add_user(trojan, t)
        self.assertIn(t.key, trojan_factory.keys)
        self.assertEqual(remove_user(trojan, "B@x"), 1)
        self.assertNotIn(t.key, trojan_factory.keys)
        self.assertEqual(remove_user(vless, "b@x"), 1)
        self.assertEqual([a.email for a in vless.accounts()], ["a@x"])
        with self.assertRaises(UserError):
            remove_user(vless, "b@x")
        self.assertIsNone(user_set("shadowsocks", self.service.inbound_groups[2][0].factory))

    def test_account_errors(self) -> None:
        from vtwist.app.api.errors import GrpcError, Status
        from vtwist.app.api.v2raypb import proxy_trojan_config_pb2, proxy_vless_account_pb2

        with self.assertRaises(GrpcError) as e:
            self.account("vmess", proxy_trojan_config_pb2.Account(password="x"), "")
        self.assertEqual(e.exception.status_code, Status.INVALID_ARGUMENT)
        with self.assertRaises(GrpcError) as e:
            self.account("vless", proxy_vless_account_pb2.Account(id="nope"), "")
        self.assertIn("user.clients[0].id", e.exception.message)
