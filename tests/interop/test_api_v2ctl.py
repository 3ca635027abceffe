"""The API and stats against the real clients: V2Ray 4.34's ``v2ctl api`` reads vtwist's
counters after traffic from a real V2Ray VMess client; V2Ray's own counters for the same
transfer agree with vtwist's; Prometheus ``/metrics`` is scraped over HTTP.

One V2Ray process is both the client (SOCKS ``to-vtwist`` and ``to-v2ray`` inbounds, each
routed to a VMess outbound) and, for the side-by-side check, a VMess server with ``stats``
and its own API. vtwist runs in the test process: VMess inbound (user ``u@test``, level 0
counting), API on a dokodemo-door inbound, ``metrics``. Fails (never skips) when
/usr/bin/v2ray or /usr/bin/v2ctl is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor, threads
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.interop.v2ray_runner import EchoServer, V2Ray
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port, wait_until

V2CTL = shutil.which("v2ctl") or "/usr/bin/v2ctl"
USER = str(uuid.uuid4())
EMAIL = "u@test"
SIZE = 1_000_000
POLICY = {"system": {"statsInboundUplink": True, "statsInboundDownlink": True,
                     "statsOutboundUplink": True, "statsOutboundDownlink": True},
          "levels": {"0": {"statsUserUplink": True, "statsUserDownlink": True}}}


def api_config(api: int, services: list[str], inbound: dict[str, Any]) -> dict[str, Any]:
    """The API (``services``) on a dokodemo-door inbound on ``api``, one more ``inbound``,
    freedom out (tag ``direct``): the same JSON for vtwist and V2Ray."""
    return {
        "log": {"loglevel": "warning"},
        "api": {"tag": "api", "services": services},
        "inbounds": [
            {"tag": "api", "port": api, "listen": "127.0.0.1", "protocol": "dokodemo-door",
             "settings": {"address": "127.0.0.1"}},
            inbound],
        "outbounds": [{"tag": "direct", "protocol": "freedom"}],
        "routing": {"rules": [{"type": "field", "inboundTag": ["api"], "outboundTag": "api"}]}}


def door(port: int, target: int) -> dict[str, Any]:
    """A dokodemo-door inbound (tag ``door``) on ``port`` to 127.0.0.1:``target``."""
    return {"tag": "door", "port": port, "listen": "127.0.0.1", "protocol": "dokodemo-door",
            "settings": {"address": "127.0.0.1", "port": target}}


def server_config(vmess: int, api: int, metrics: int | None = None) -> dict[str, Any]:
    """The server side, the same JSON for vtwist and V2Ray."""
    config = api_config(api, ["StatsService", "LoggerService"], {
        "tag": "vmess-in", "port": vmess, "listen": "127.0.0.1", "protocol": "vmess",
        "settings": {"clients": [{"id": USER, "alterId": 0, "email": EMAIL}]}})
    config.update({"stats": {}, "policy": POLICY})
    if metrics is not None:
        config["metrics"] = {"port": metrics}
    return config


def parse_stats(text: str) -> dict[str, int]:
    """v2ctl's protobuf text output -> {name: value} (a zero value is left out there)."""
    return {m.group(1): int(m.group(2) or 0) for m in re.finditer(
        r'name: "([^"]*)"\s*(?:value: (\d+))?', text)}


async def v2ctl(port: int, method: str, request: str) -> tuple[str, int]:
    """Run ``v2ctl api``; (stdout + stderr, exit code)."""
    out, err, code = await getProcessOutputAndValue(
        V2CTL, ["api", f"--server=127.0.0.1:{port}", method, request], env=dict(os.environ))
    return (out + err).decode(errors="replace"), code


class ApiAgainstV2Ctl(TestCase):
    """Traffic from V2Ray's VMess client through vtwist, then v2ctl and /metrics."""

    timeout = 180

    async def setUp(self) -> None:  # type: ignore[override]
        from tests.services import start_service

        if not os.path.exists(V2CTL):
            raise AssertionError(f"v2ctl not found at {V2CTL}; install V2Ray 4.34")
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.vmess, self.api, self.metrics = free_port(), free_port(), free_port()
        self.service = await start_service(server_config(self.vmess, self.api, self.metrics),
                                           self)
        self.restarts: list[int] = []
        self.service.operations.context.restart_logger = lambda: self.restarts.append(1)
        self.v2_vmess, self.v2_api = free_port(), free_port()
        self.socks_vtwist, self.socks_v2 = free_port(), free_port()
        config = server_config(self.v2_vmess, self.v2_api)
        config["inbounds"] += [
            {"tag": "to-vtwist", "port": self.socks_vtwist, "listen": "127.0.0.1",
             "protocol": "socks", "settings": {"udp": True, "ip": "127.0.0.1"}},
            {"tag": "to-v2ray", "port": self.socks_v2, "listen": "127.0.0.1",
             "protocol": "socks", "settings": {"udp": False}}]
        config["outbounds"] += [
            {"tag": f"vmess-{name}", "protocol": "vmess", "settings": {"vnext": [{
                "address": "127.0.0.1", "port": port,
                "users": [{"id": USER, "alterId": 0, "security": "aes-128-gcm"}]}]}}
            for name, port in (("vtwist", self.vmess), ("v2ray", self.v2_vmess))]
        config["routing"]["rules"] += [
            {"type": "field", "inboundTag": ["to-vtwist"], "outboundTag": "vmess-vtwist"},
            {"type": "field", "inboundTag": ["to-v2ray"], "outboundTag": "vmess-v2ray"}]
        self.v2ray = V2Ray(config)
        self.addCleanup(self.v2ray.stop)
        for port in (self.socks_vtwist, self.socks_v2, self.v2_api):
            await self.v2ray.wait_port(port)

    async def transfer(self, socks: int) -> None:
        sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", self.echo.port, SIZE)
        self.assertEqual(sent, got)

    async def query(self, port: int, pattern: str = "", reset: bool = False) -> dict[str, int]:
        out, code = await v2ctl(port, "StatsService.QueryStats",
                                f'pattern: "{pattern}" reset: {str(reset).lower()}')
        self.assertEqual(code, 0, out)
        return parse_stats(out)

    async def test_query_stats_after_traffic(self) -> None:
        """v2ctl QueryStats prints every counter with exactly the payload that passed."""
        before = await self.query(self.api)
        self.assertEqual(set(before), {f"{kind}>>>{tag}>>>traffic>>>{way}"
                                       for kind, tag in (("inbound", "api"),
                                                         ("inbound", "vmess-in"),
                                                         ("outbound", "direct"))
                                       for way in ("uplink", "downlink")})
        # the API's own inbound counts its HTTP/2 bytes (this very request), as V2Ray's does
        self.assertGreater(before["inbound>>>api>>>traffic>>>uplink"], 0)
        self.assertEqual({v for k, v in before.items() if ">>>api>>>" not in k}, {0})
        await self.transfer(self.socks_vtwist)
        stats = await self.query(self.api)
        for name in ("user>>>u@test>>>traffic>>>uplink", "user>>>u@test>>>traffic>>>downlink",
                     "inbound>>>vmess-in>>>traffic>>>uplink",
                     "inbound>>>vmess-in>>>traffic>>>downlink",
                     "outbound>>>direct>>>traffic>>>uplink",
                     "outbound>>>direct>>>traffic>>>downlink"):
            self.assertEqual(stats.get(name), SIZE, (name, stats))
        # the pattern is a substring; reset zeroes what was returned
        users = await self.query(self.api, "user>>>", reset=True)
        self.assertEqual(set(users), {"user>>>u@test>>>traffic>>>uplink",
                                      "user>>>u@test>>>traffic>>>downlink"})
        self.assertEqual(set((await self.query(self.api, "user")).values()), {0})

    async def test_get_stats_and_errors(self) -> None:
        """GetStats (and its reset), a missing counter's error, GetSysStats, RestartLogger."""
        await self.transfer(self.socks_vtwist)
        name = "outbound>>>direct>>>traffic>>>uplink"
        out, code = await v2ctl(self.api, "StatsService.GetStats", f'name: "{name}" reset: true')
        self.assertEqual((code, parse_stats(out)), (0, {name: SIZE}), out)
        out, code = await v2ctl(self.api, "StatsService.GetStats", f'name: "{name}"')
        self.assertEqual((code, parse_stats(out)), (0, {name: 0}), out)
        out, code = await v2ctl(self.api, "StatsService.GetStats", 'name: "no>>>such"')
        self.assertNotEqual(code, 0)
        self.assertIn("code = Unknown desc = v2ray.com/core/app/stats/command: no>>>such not "
                      "found.", out)
        out, code = await v2ctl(self.api, "StatsService.GetSysStats", "")
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"Sys: \d{7,}")
        out, code = await v2ctl(self.api, "LoggerService.RestartLogger", "")
        self.assertEqual((code, self.restarts), (0, [1]), out)
        # the server still serves after the error
        self.assertIn(name, await self.query(self.api))

    async def test_counters_agree_with_v2ray(self) -> None:
        """The same transfer through V2Ray's and vtwist's VMess servers: the user and
        outbound counters agree (both count payload). Inbound counters differ by design:
        V2Ray's count the VMess wire bytes, vtwist's the payload."""
        await self.transfer(self.socks_vtwist)
        await self.transfer(self.socks_v2)
        ours = await self.query(self.api)
        theirs = await self.query(self.v2_api)
        for name in ("user>>>u@test>>>traffic>>>uplink", "user>>>u@test>>>traffic>>>downlink",
                     "outbound>>>direct>>>traffic>>>uplink",
                     "outbound>>>direct>>>traffic>>>downlink"):
            self.assertEqual(ours[name], theirs[name], (name, ours, theirs))
            self.assertEqual(ours[name], SIZE)
        self.assertGreater(theirs["inbound>>>vmess-in>>>traffic>>>uplink"], SIZE)
        self.assertEqual(ours["inbound>>>vmess-in>>>traffic>>>uplink"], SIZE)

    async def test_metrics(self) -> None:
        """/metrics over HTTP: bytes per inbound, outbound and user, connections, a refused
        probe by reason, VMess handshake latency, process memory and descriptors."""
        await self.transfer(self.socks_vtwist)

        def probe() -> None:
            with socket.create_connection(("127.0.0.1", self.vmess)) as s:
                s.sendall(os.urandom(64))

        await threads.deferToThread(probe)
        stats = self.service.tunnels.stats
        await wait_until(lambda: stats.failed.get("unknown_user"), "probe not counted")
        await wait_until(lambda: stats.active == 0, "connections still open")
        body = await self.scrape()
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(body) for s in family.samples}

        def value(metric: str, **labels: str) -> float:
            return samples[(metric, tuple(sorted(labels.items())))]

        for kind, tag in (("user", EMAIL), ("inbound", "vmess-in"), ("outbound", "direct")):
            for way in ("uplink", "downlink"):
                self.assertEqual(value("vtwist_traffic_bytes_total", kind=kind, name=tag,
                                       direction=way), SIZE)
        self.assertEqual(value("vtwist_connections_total"), 1)
        self.assertEqual(value("vtwist_connections_active"), 0)
        self.assertEqual(value("vtwist_connections_failed_total", reason="unknown_user"), 1)
        self.assertEqual(value("vtwist_connections_failed_total", reason="dispatch"), 0)
        self.assertEqual(value("vtwist_handshake_seconds_count", protocol="vmess"), 1)
        self.assertEqual(value("vtwist_handshake_seconds_bucket", protocol="vmess", le="+Inf"),
                         1)
        self.assertGreater(value("process_resident_memory_bytes"), 10 << 20)
        self.assertGreater(value("process_open_fds"), 3)
        # no label names a destination
        self.assertNotIn(str(self.echo.port), body)

    async def scrape(self) -> str:
        from twisted.web.client import Agent, readBody

        response = await Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{self.metrics}/metrics".encode())
        self.assertEqual(response.code, 200)
        return (await readBody(response)).decode()

    async def test_api_keeps_serving_after_garbage(self) -> None:
        """Bytes that are not HTTP/2 close that connection; v2ctl still works after."""
        def garbage() -> bytes:
            with socket.create_connection(("127.0.0.1", self.api)) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(10)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                return data

        await threads.deferToThread(garbage)
        self.assertIn("inbound>>>api>>>traffic>>>uplink", await self.query(self.api))


    async def test_grpcio_client(self) -> None:
        """grpcio (the reference gRPC client, as panels use it): statuses for an unknown
        method and service and an undecodable request, then a good call on the same
        channel."""
        import grpc

        from vtwist.app.api.v2raypb import app_stats_command_command_pb2 as pb

        def calls() -> list[Any]:
            results: list[Any] = []
            with grpc.insecure_channel(f"127.0.0.1:{self.api}") as channel:
                for path, body in (
                        ("/v2ray.core.app.stats.command.StatsService/Nope", b""),
                        ("/v2ray.core.Nope/QueryStats", b""),
                        ("/v2ray.core.app.stats.command.StatsService/QueryStats",
                         b"\x0a\xff\xff"),
                        ("/v2ray.core.app.stats.command.StatsService/QueryStats",
                         pb.QueryStatsRequest(pattern="direct").SerializeToString())):
                    call = channel.unary_unary(path, request_serializer=None,
                                               response_deserializer=None)
                    try:
                        results.append(call(body, timeout=10))
                    except grpc.RpcError as e:
                        results.append((e.code(), e.details()))
            return results

        unknown_method, unknown_service, undecodable, good = \
            await threads.deferToThread(calls)
        self.assertEqual(unknown_method[0], grpc.StatusCode.UNIMPLEMENTED)
        self.assertEqual(unknown_service, (grpc.StatusCode.UNIMPLEMENTED,
                                           "unknown service v2ray.core.Nope"))
        self.assertEqual(undecodable[0], grpc.StatusCode.INTERNAL)
        self.assertIn("error unmarshalling request", undecodable[1])
        names = [s.name for s in pb.QueryStatsResponse.FromString(good).stat]
        self.assertEqual(names, ["outbound>>>direct>>>traffic>>>downlink",
                                 "outbound>>>direct>>>traffic>>>uplink"])

    async def test_udp_counts_for_the_user(self) -> None:
        """UDP through VMess counts for the user too (its level's switches apply)."""
        payloads = [bytes([i]) * 500 for i in range(3)]
        echoed = await socks_udp_echo(reactor, self.socks_vtwist, "127.0.0.1", self.echo.port,
                                      payloads)
        self.assertEqual(echoed, payloads)
        stats = await self.query(self.api, "user")
        for way in ("uplink", "downlink"):
            value = stats[f"user>>>u@test>>>traffic>>>{way}"]
            self.assertGreaterEqual(value, 1500)  # resent datagrams count as well
            self.assertEqual(value % 500, 0)


class RestartLoggerTests(TestCase):
    """``v2ctl api LoggerService.RestartLogger`` against a vtwist process: after logrotate
    renamed the access log, the next lines go to a new file of the configured name."""

    timeout = 120

    async def test_restart_logger_reopens_the_access_log(self) -> None:
        import json
        import subprocess
        import sys

        from tests.interop.v2ray_runner import Subprocess
        from tests.netutil import wait_for_port_async

        echo = EchoServer()
        self.addCleanup(echo.stop)
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        access = os.path.join(workdir, "access.log")
        api, door_port = free_port(), free_port()
        config = api_config(api, ["LoggerService"], door(door_port, echo.port))
        config["log"]["access"] = access
        path = os.path.join(workdir, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        errors = open(os.path.join(workdir, "stderr"), "wb")  # noqa: SIM115
        self.addCleanup(errors.close)
        proc = Subprocess([sys.executable, "-m", "vtwist", "run", "--config", path],
                          stdout=subprocess.DEVNULL, stderr=errors, cwd=repo)
        self.addCleanup(proc.stop)
        for port in (api, door_port):
            await wait_for_port_async(port, 30, alive=proc.check_alive)

        def one_connection() -> None:
            with socket.create_connection(("127.0.0.1", door_port)) as s:
                s.sendall(b"ping")
                assert s.recv(4) == b"ping"

        def lines(name: str) -> list[str]:
            try:
                with open(name) as f:
                    return [line for line in f.read().splitlines() if " accepted " in line]
            except FileNotFoundError:
                return []

        await threads.deferToThread(one_connection)
        # the port probe's connection and ours
        await wait_until(lambda: len(lines(access)) == 2, lambda: repr(lines(access)))
        os.rename(access, access + ".1")  # what logrotate does
        out, code = await v2ctl(api, "LoggerService.RestartLogger", "")
        self.assertEqual(code, 0, out)
        await threads.deferToThread(one_connection)
        await wait_until(lambda: len(lines(access)) == 1,
                         lambda: repr((lines(access), lines(access + ".1"))))
        self.assertEqual(len(lines(access + ".1")), 2)


class DokodemoSideBySide(TestCase):
    """dokodemo-door -> freedom has no protocol framing: every counter, inbound ones too,
    agrees between V2Ray and vtwist for the same transfer."""

    timeout = 120

    async def test_all_counters_agree(self) -> None:
        from tests.services import start_service

        echo = EchoServer()
        self.addCleanup(echo.stop)

        def config(door_port: int, api: int) -> dict[str, Any]:
            out = api_config(api, ["StatsService"], door(door_port, echo.port))
            out.update({"stats": {}, "policy": POLICY})
            return out

        ours_door, ours_api, theirs_door, theirs_api = (free_port() for _ in range(4))
        await start_service(config(ours_door, ours_api), self)
        v2ray = V2Ray(config(theirs_door, theirs_api))
        self.addCleanup(v2ray.stop)
        for port in (theirs_door, theirs_api):
            await v2ray.wait_port(port)
        # wait_port's probe connections went through the doors too: reset before
        payload = os.urandom(SIZE)

        def transfer(port: int) -> None:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(payload)
                got = 0
                while got < SIZE:
                    chunk = s.recv(1 << 16)
                    assert chunk, got
                    got += len(chunk)

        results = []
        for door_port, api in ((ours_door, ours_api), (theirs_door, theirs_api)):
            out, code = await v2ctl(api, "StatsService.QueryStats",
                                    'pattern: "traffic" reset: true')
            self.assertEqual(code, 0, out)
            await threads.deferToThread(transfer, door_port)
            out, code = await v2ctl(api, "StatsService.QueryStats", 'pattern: "door"')
            self.assertEqual(code, 0, out)
            after = parse_stats(out)
            out, code = await v2ctl(api, "StatsService.QueryStats", 'pattern: "direct"')
            after.update(parse_stats(out))
            results.append(after)
        ours, theirs = results
        expected = {f"{kind}>>>{tag}>>>traffic>>>{way}": SIZE
                    for kind, tag in (("inbound", "door"), ("outbound", "direct"))
                    for way in ("uplink", "downlink")}
        self.assertEqual(theirs, expected)
        self.assertEqual(ours, expected)
