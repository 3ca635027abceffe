"""``--workers 2`` with ``stats``, ``api`` and ``metrics``: the supervisor serves the sum of
both workers' counters (queried with the real ``v2ctl`` and an HTTP GET of ``/metrics``), a
worker killed with SIGKILL keeps what it had pushed, RestartLogger reaches every worker, and
logs and access lines come out as one stream."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from typing import Any

from tests.netutil import free_port
from tests.test_workers import (
    WorkersHarness,
    children,
    echo_through,
    socks_connect,
    wait_for,
)

V2CTL = shutil.which("v2ctl")
STAT = re.compile(r'stat:\s*<\s*name:\s*"([^"]*)"(?:\s*value:\s*(\d+))?\s*>')
ACCESS = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d from 127\.0\.0\.1:(\d+) "
                    r"(accepted|closed) tcp:127\.0\.0\.1:\d+ \[in >> direct\]( .*)?$")


class StatsWorkersTests(WorkersHarness):
    """The supervisor's API and metrics over two workers."""

    def setUp(self) -> None:
        if V2CTL is None:
            self.skipTest("v2ctl is not installed (apt-get install v2ray)")
        super().setUp()
        self.port, self.api, self.metrics = free_port(), free_port(), free_port()

    def config(self) -> dict[str, Any]:
        config = self.dokodemo(self.port)
        config["inbounds"][0]["tag"] = "in"
        config["inbounds"].append({"tag": "api", "port": self.api, "listen": "127.0.0.1",
                                   "protocol": "dokodemo-door",
                                   "settings": {"address": "127.0.0.1"}})
        config["outbounds"][0]["tag"] = "direct"
        config.update({
            "stats": {},
            "api": {"tag": "api",
                    "services": ["StatsService", "LoggerService", "HandlerService"]},
            "metrics": {"listen": "127.0.0.1", "port": self.metrics},
            "policy": {"system": {"statsInboundUplink": True, "statsInboundDownlink": True,
                                  "statsOutboundUplink": True,
                                  "statsOutboundDownlink": True}},
            "routing": {"rules": [{"type": "field", "inboundTag": ["api"],
                                   "outboundTag": "api"}]}})
        return config

    # -- clients --------------------------------------------------------------------------
    def v2ctl(self, method: str, request: str) -> str:
        done = subprocess.run([V2CTL, "api", f"--server=127.0.0.1:{self.api}", method,
                               request], capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        return done.stdout

    def query(self, pattern: str = "", reset: bool = False) -> dict[str, int]:
        out = self.v2ctl("StatsService.QueryStats",
                         f'pattern: "{pattern}" reset: {"true" if reset else "false"}')
        return {name: int(value or 0) for name, value in STAT.findall(out)}

    def scrape(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics",
                                    timeout=30) as reply:
            text = reply.read().decode()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line.startswith("vtwist_")}

    def traffic(self, count: int, pids: list[int], base: int) -> tuple[int, list[int],
                                                                       list[int]]:
        """At least ``count`` echo connections of distinct sizes, more (up to 64 in all)
        until each of ``pids`` served one: (bytes each way, the worker of each, the client
        ports). SO_REUSEPORT spreads by a hash of the 4-tuple, so ``count`` alone leaves a
        worker out once in 2**(count-1) runs (a clean-clone run met that at 12)."""
        total, owners, ports = 0, [], []
        for i in range(64):
            if i >= count and set(pids) <= set(owners):
                break
            s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            owners.append(self.owner(s, self.port, pids))
            ports.append(s.getsockname()[1])
            size = base + 97 * i
            self.assertTrue(echo_through(s, size))
            s.close()
            total += size
        return total, owners, ports

    def wait_counted(self, total: int) -> dict[str, int]:
        """Poll the API until the inbound's uplink reaches ``total`` (at most a push
        interval behind); the counters then."""
        seen: list[dict[str, int]] = [{}]

        def counted() -> bool:
            seen[0] = self.query()
            return seen[0].get("inbound>>>in>>>traffic>>>uplink") == total and \
                seen[0].get("inbound>>>in>>>traffic>>>downlink") == total

        wait_for(counted, lambda: f"expected {total} each way, got {seen[0]}\n"
                                  f"{self.output()}", 20)
        return seen[0]

    # -- the tests ----------------------------------------------------------------------------
    def test_api_and_metrics_sum_both_workers(self) -> None:
        """Traffic through both workers: v2ctl's QueryStats/GetStats and /metrics show the
        sum; a reset zeroes the sum and later traffic counts from zero; HandlerService is
        refused with a clear status; GetSysStats answers."""
        proc, pids = self.run_workers(self.config())
        total, owners, _ = self.traffic(16, pids, 1000)
        self.assertEqual(set(owners), set(pids), owners)  # both workers carried some
        counters = self.wait_counted(total)
        self.assertEqual(counters["outbound>>>direct>>>traffic>>>uplink"], total)
        self.assertEqual(counters["outbound>>>direct>>>traffic>>>downlink"], total)
        self.assertIn("inbound>>>api>>>traffic>>>uplink", counters)  # the API's own traffic
        one = self.v2ctl("StatsService.GetStats",
                         'name: "inbound>>>in>>>traffic>>>uplink" reset: false')
        self.assertIn(f"value: {total}", one)
        metrics = self.scrape()
        for direction in ("uplink", "downlink"):
            for kind, name in (("inbound", "in"), ("outbound", "direct")):
                key = (f'vtwist_traffic_bytes_total{{direction="{direction}",kind="{kind}",'
                       f'name="{name}"}}')
                self.assertEqual(metrics.get(key), total, metrics)
        self.assertEqual(metrics["vtwist_connections_total"], len(owners))

        # reset: the sum goes to zero, what comes after counts from zero
        reset = self.query("in>>>traffic", reset=True)
        self.assertEqual(reset["inbound>>>in>>>traffic>>>uplink"], total)
        self.assertEqual(self.query("in>>>traffic")["inbound>>>in>>>traffic>>>uplink"], 0)
        more, _, _ = self.traffic(4, pids, 333)
        self.wait_counted(more)
        self.assertEqual(self.scrape().get('vtwist_traffic_bytes_total{direction="uplink",'
                                           'kind="inbound",name="in"}'), total + more)

        sysstats = self.v2ctl("StatsService.GetSysStats", "")
        self.assertRegex(sysstats, r"Uptime: \d+")
        wait_for(lambda: "NumGoroutine" not in self.v2ctl("StatsService.GetSysStats", ""),
                 "connections still counted as open", 20)  # 0 is left out of the text

        import grpc

        from vtwist.app.api.v2raypb import app_proxyman_command_command_pb2 as hpb

        with grpc.insecure_channel(f"127.0.0.1:{self.api}") as channel:
            remove = channel.unary_unary(
                "/v2ray.core.app.proxyman.command.HandlerService/RemoveInbound",
                request_serializer=hpb.RemoveInboundRequest.SerializeToString,
                response_deserializer=hpb.RemoveInboundResponse.FromString)
            with self.assertRaises(grpc.RpcError) as caught:
                remove(hpb.RemoveInboundRequest(tag="in"), timeout=20)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("not available with --workers", caught.exception.details())
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        self.assertTrue(echo_through(s, 100))  # the inbound is still there
        s.close()

        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=60), 0, self.output())
        self.assertNotIn("Traceback", self.output())

    def test_user_counters_over_vmess(self) -> None:
        """A VMess server with 2 workers: the user's counters (V2Ray's names) sum what both
        workers relayed for that user, from a vtwist client through SOCKS."""
        user = str(uuid.uuid4())
        server = self.config()
        server["inbounds"][0] = {"tag": "in", "port": self.port, "listen": "127.0.0.1",
                                 "protocol": "vmess", "settings": {"clients": [
                                     {"id": user, "alterId": 0, "email": "u@x", "level": 0}]}}
        server["policy"]["levels"] = {"0": {"statsUserUplink": True,
                                            "statsUserDownlink": True}}
        proc, pids = self.run_workers(server)
        self.target.sources = pids
        socks_port = self.vmess_client(self.port, user)
        total = made = 0
        while made < 64:  # 12 at least, and until both workers carried one
            if made >= 12 and set(pids) <= set(self.target.owners):
                break
            i, made = made, made + 1
            s = socks_connect(socks_port, self.target.port)
            size = 3000 + 111 * i
            self.assertTrue(echo_through(s, size))
            s.close()
            total += size
        wait_for(lambda: len(self.target.owners) == made,
                 f"the target saw no {made} connections")
        self.assertEqual(set(self.target.owners), set(pids), self.target.owners)
        seen: list[dict[str, int]] = [{}]

        def counted() -> bool:
            seen[0] = self.query("user>>>")
            return seen[0] == {"user>>>u@x>>>traffic>>>uplink": total,
                               "user>>>u@x>>>traffic>>>downlink": total}

        wait_for(counted, lambda: f"expected {total} each way, got {seen[0]}", 20)
        metrics = self.scrape()
        self.assertEqual(metrics['vtwist_traffic_bytes_total{direction="downlink",'
                                 'kind="user",name="u@x"}'], total)

    def test_killed_worker_keeps_pushed_counts(self) -> None:
        """A worker killed with SIGKILL after its counts were pushed: they stay in the sum;
        the worker is started again and its new traffic adds to it."""
        proc, pids = self.run_workers(self.config())
        first, owners, _ = self.traffic(12, pids, 2000)
        made = len(owners)
        self.assertEqual(set(owners), set(pids), owners)
        self.wait_counted(first)
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: pids[0] not in children(proc.pid), "the worker does not die", 30)
        self.assertEqual(self.query()["inbound>>>in>>>traffic>>>uplink"], first)
        wait_for(lambda: self.output().count("ready") >= 3 and
                 len(children(proc.pid)) == 2,
                 lambda: f"the worker is not back:\n{self.output()}", 60)
        now = children(proc.pid)
        self.assertNotIn(pids[0], now)
        second, owners, _ = self.traffic(12, now, 500)
        self.assertEqual(set(owners), set(now), owners)  # the new worker counts too
        self.wait_counted(first + second)
        self.assertEqual(self.scrape()["vtwist_connections_total"], made + len(owners))

    def test_stopping_worker_pushes_its_last_counts(self) -> None:
        """A worker stopped with SIGTERM while a connection is open pushes what it counted
        since its last push before it exits (nothing lost); it is started again."""
        proc, pids = self.run_workers(self.config())
        s = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        owner = self.owner(s, self.port, pids)
        self.assertTrue(echo_through(s, 54321))
        os.kill(owner, signal.SIGTERM)  # well within the push interval
        s.close()  # (the worker drains: it stops once its connection has closed)
        wait_for(lambda: owner not in children(proc.pid), "the worker does not stop", 30)
        self.assertEqual(self.query()["inbound>>>in>>>traffic>>>uplink"], 54321)
        self.assertEqual(self.query()["inbound>>>in>>>traffic>>>downlink"], 54321)
        wait_for(lambda: "exited with status 0: starting it again" in self.output(),
                 lambda: f"not restarted:\n{self.output()}", 30)

    def test_logs_and_access_lines_one_stream(self) -> None:
        """Both workers write whole lines to the one access log and the one output; after
        logrotate's move, RestartLogger makes every worker write to the new file."""
        proc, pids = self.run_workers(self.config())
        _, owners, ports = self.traffic(12, pids, 100)
        self.assertEqual(set(owners), set(pids), owners)

        def logged(path: str, wanted: list[int]) -> bool:
            with open(path, errors="replace") as f:
                lines = f.read().splitlines()
            for line in lines:  # every line whole: no two writers interleaved
                self.assertRegex(line, ACCESS)
            closed = [int(m.group(1)) for m in map(ACCESS.match, lines)
                      if m and m.group(2) == "closed"]
            return sorted(p for p in closed if p in wanted) == sorted(wanted)

        wait_for(lambda: logged(self.access, ports),
                 lambda: f"not every connection logged:\n{self.access_lines()}", 20)
        rotated = self.access + ".1"
        os.rename(self.access, rotated)
        self.assertEqual(self.v2ctl("LoggerService.RestartLogger", "").strip(), "")
        _, owners, ports = self.traffic(12, pids, 100)
        self.assertEqual(set(owners), set(pids), owners)
        wait_for(lambda: os.path.exists(self.access) and logged(self.access, ports),
                 lambda: f"not every worker writes the new file:\n{self.access_lines()}", 20)
        self.assertFalse(logged(rotated, ports[:1]))  # nothing new went to the old file
        stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[")
        for line in self.output().splitlines():  # supervisor and workers: whole lines
            self.assertRegex(line, stamp)
        self.assertEqual(self.output().count("] worker "), 2)  # "worker N (pid) ready"
        self.assertNotIn("Traceback", self.output())

    def test_api_port_in_use_fails(self) -> None:
        """The API's port taken by another program: the supervisor says so and exits 1."""
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        self.api = busy.getsockname()[1]
        path = self.write_config(self.config())
        proc = self.spawn([sys.executable, "-m", "vtwist", "run", "--workers", "2",
                           "--config", path])
        self.assertEqual(proc.wait(timeout=60), 1, self.output())
        self.assertIn("the gRPC API cannot listen", self.output())
        self.assertNotIn("Unhandled error", self.output())
