"""Worker counters summed in the supervisor (vtwist.app.statsync), the control channel's
framing and requests (vtwist.app.control), and the control plane's worker config."""

from __future__ import annotations

import json

from twisted.internet import defer
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from vtwist.app import control, statsync
from vtwist.app.api.context import ApiContext
from vtwist.app.api.errors import GrpcError, Status
from vtwist.app.api.logger_service import LoggerService
from vtwist.app.api.refused import HANDLER_METHODS, handler_with_workers
from vtwist.app.controlplane import worker_config
from vtwist.app.metrics import kcp_metrics
from vtwist.config.loader import parse_config
from vtwist.policy import SystemPolicy
from vtwist.tunnel.stats import StatsManager

SWITCHES = SystemPolicy(stats_inbound_uplink=True, stats_inbound_downlink=True)


def worker_stats() -> StatsManager:
    stats = StatsManager(SWITCHES, metrics=True)
    stats.register_handler("inbound", "in")
    return stats


def relay(stats: StatsManager, email: str = "a@x") -> list[int]:
    """A relay's counts list, tracked as the tunnel tracks one."""
    counts = [0, 0]
    up, down = stats.counters_for("in", "", email, True, True)
    stats.track(counts, up, down)
    return counts


class TakeTests(SynchronousTestCase):
    """The worker's side: deltas since the last push, each sent once."""

    def test_deltas_are_sent_once(self) -> None:
        stats = worker_stats()
        known: set = set()
        counts = relay(stats)
        counts[0] += 100
        counts[1] += 7
        first = statsync.take(stats, known)
        self.assertEqual(first["counters"], {
            "inbound>>>in>>>traffic>>>uplink": 100, "inbound>>>in>>>traffic>>>downlink": 7,
            "user>>>a@x>>>traffic>>>uplink": 100, "user>>>a@x>>>traffic>>>downlink": 7})
        self.assertIn(["inbound", "in", 0, 100], first["totals"])
        second = statsync.take(stats, known)
        self.assertEqual((second["counters"], second["totals"]), ({}, []))
        counts[0] += 5
        third = statsync.take(stats, known)
        self.assertEqual(third["counters"]["inbound>>>in>>>traffic>>>uplink"], 5)
        json.dumps(third)  # what the channel sends

    def test_new_counter_announced_at_zero(self) -> None:
        stats = worker_stats()
        known: set = set()
        statsync.take(stats, known)
        stats.register("user>>>b@x>>>traffic>>>uplink")
        self.assertEqual(statsync.take(stats, known)["counters"],
                         {"user>>>b@x>>>traffic>>>uplink": 0})

    def test_connections_failures_handshakes(self) -> None:
        stats = worker_stats()
        stats.connection_opened()
        stats.connection_opened()
        stats.connection_closed()
        stats.connection_failed("timeout")
        stats.handshake("socks", 0.003)
        message = statsync.take(stats, set())
        self.assertEqual((message["opened"], message["active"], message["failed"]),
                         (2, 1, {"timeout": 1}))
        self.assertEqual(message["handshakes"]["socks"][2], 1)
        again = statsync.take(stats, set())
        self.assertEqual((again["opened"], again["active"], again["failed"],
                          again["handshakes"]), (0, 1, {}, {}))


class AggregateTests(SynchronousTestCase):
    """The supervisor's side: the sum, reset semantics, a worker that ends."""

    def setUp(self) -> None:
        self.total = worker_stats()
        self.aggregate = statsync.Aggregate(self.total)
        self.workers = [worker_stats(), worker_stats()]
        self.known: list[set] = [set(), set()]
        self.counts = [relay(w) for w in self.workers]

    def push(self, i: int) -> None:
        message = json.loads(json.dumps(statsync.take(self.workers[i], self.known[i])))
        self.aggregate.apply(i, message)

    def test_sum_of_workers(self) -> None:
        self.counts[0][0] += 1000
        self.counts[1][0] += 234
        self.counts[1][1] += 5
        self.push(0)
        self.push(1)
        self.assertEqual(self.total.get("inbound>>>in>>>traffic>>>uplink"), 1234)
        self.assertEqual(self.total.query("downlink"), [
            ("inbound>>>in>>>traffic>>>downlink", 5), ("user>>>a@x>>>traffic>>>downlink", 5)])
        self.assertEqual(self.total.totals[("user", "a@x", 0)].value, 1234)

    def test_reset_counts_from_zero(self) -> None:
        self.counts[0][0] += 1000
        self.push(0)
        self.assertEqual(self.total.get("inbound>>>in>>>traffic>>>uplink", reset=True), 1000)
        self.assertEqual(self.total.get("inbound>>>in>>>traffic>>>uplink"), 0)
        self.counts[0][0] += 10
        self.counts[1][0] += 20
        self.push(0)
        self.push(1)
        self.assertEqual(self.total.query("in>>>traffic>>>up", reset=True),
                         [("inbound>>>in>>>traffic>>>uplink", 30)])
        self.push(0)  # nothing new
        self.assertEqual(self.total.get("inbound>>>in>>>traffic>>>uplink"), 0)
        # the metrics' hidden totals are never reset
        self.assertEqual(self.total.totals[("inbound", "in", 0)].value, 1030)

    def test_active_and_a_worker_that_ends(self) -> None:
        for w in self.workers:
            w.connection_opened()
        self.push(0)
        self.push(1)
        self.assertEqual((self.total.active, self.total.opened), (2, 2))
        self.aggregate.worker_gone(0)
        self.assertEqual((self.total.active, self.total.opened), (1, 2))

    def test_kcp_figures_summed_and_kept(self) -> None:
        figures = [{("server", "none"): [2, 100, 5, 60.0, 2]},
                   {("server", "none"): [1, 50, 1, 30.0, 1]}]
        for i in (0, 1):
            message = statsync.take(self.workers[i], self.known[i], lambda i=i: figures[i])
            self.aggregate.apply(i, json.loads(json.dumps(message)))
        self.assertEqual(self.aggregate.kcp_figures(),
                         {("server", "none"): [3, 150, 6, 90.0, 3]})
        self.aggregate.worker_gone(0)
        self.assertEqual(self.aggregate.kcp_figures(),
                         {("server", "none"): [1, 150, 6, 30.0, 1]})
        families = {m.name: m for m in kcp_metrics(self.aggregate.kcp_figures())}
        self.assertEqual(families["vtwist_kcp_segments_sent"].samples[0].value, 150)
        self.assertEqual(families["vtwist_kcp_srtt_seconds"].samples[0].value, 0.03)


class ChannelTests(SynchronousTestCase):
    """Framing and requests on the control channel."""

    def test_supervisor_end(self) -> None:
        got: list[dict] = []
        lost: list[bool] = []
        channel = control.SupervisorChannel(got.append, lambda: lost.append(True))
        transport = StringTransport()
        channel.makeConnection(transport)
        frame = control.encode({"stats": {"opened": 1}})
        channel.dataReceived(frame[:3])
        channel.dataReceived(frame[3:] + control.encode({"stats": {"opened": 2}}))
        self.assertEqual(got, [{"stats": {"opened": 1}}, {"stats": {"opened": 2}}])
        answered = channel.request("restart_logger")
        sent = json.loads(transport.value()[4:])
        self.assertEqual(sent["op"], "restart_logger")
        self.assertNoResult(answered)
        channel.dataReceived(control.encode({"reply": sent["request"], "error": None}))
        self.successResultOf(answered)
        failed = channel.request("restart_logger")
        channel.dataReceived(control.encode({"reply": sent["request"] + 1, "error": "no"}))
        self.assertEqual(self.failureResultOf(failed).getErrorMessage(), "no")
        pending = channel.request("restart_logger")
        channel.connectionLost(None)
        self.failureResultOf(pending, control.ChannelClosed)
        self.assertEqual(lost, [True])
        self.failureResultOf(channel.request("x"), control.ChannelClosed)

    def test_worker_end_answers_requests(self) -> None:
        mine, theirs = control.socket_pair()
        self.addCleanup(mine.close)

        class Reactor:
            def addReader(self, reader: object) -> None: ...

            def removeReader(self, reader: object) -> None: ...

        calls: list[str] = []

        def broken() -> None:
            raise OSError("disk full")

        worker = control.WorkerChannel(theirs.detach(), Reactor(),
                                       {"ok": lambda: calls.append("ok"), "broken": broken})
        self.addCleanup(worker.close)
        mine.sendall(control.encode({"request": 1, "op": "ok"})
                     + control.encode({"request": 2, "op": "broken"})
                     + control.encode({"request": 3, "op": "nope"}))
        worker.doRead()
        self.assertTrue(worker.send({"stats": {}}))
        mine.settimeout(5)
        data = b""
        while data.count(b"}") < 4:
            data += mine.recv(65536)
        replies = []
        while data:
            size = int.from_bytes(data[:4], "big")
            replies.append(json.loads(data[4:4 + size]))
            data = data[4 + size:]
        self.assertEqual(calls, ["ok"])
        self.assertEqual(replies, [{"reply": 1, "error": None},
                                   {"reply": 2, "error": "disk full"},
                                   {"reply": 3, "error": "unknown request 'nope'"},
                                   {"stats": {}}])
        mine.close()
        worker.doRead()  # the supervisor is gone: stop reading, no error
        self.assertFalse(worker.send({"stats": {}}))
        self.assertTrue(worker.closed)


class ControlPlaneTests(SynchronousTestCase):
    """What the supervisor keeps for itself, and how its API services answer."""

    def test_worker_config_drops_api_inbounds(self) -> None:
        raw = {"api": {"tag": "api", "services": ["StatsService"]}, "stats": {},
               "inbounds": [{"tag": "in", "port": 1080, "protocol": "socks"},
                            {"tag": "api", "port": 10085, "listen": "127.0.0.1",
                             "protocol": "dokodemo-door", "settings": {"address": "127.0.0.1"}}],
               "outbounds": [{"protocol": "freedom"}],
               "routing": {"rules": [{"type": "field", "inboundTag": ["api"],
                                      "outboundTag": "api"}]}}
        out = worker_config(raw, parse_config(raw, lambda _: None))
        self.assertEqual([i["tag"] for i in out["inbounds"]], ["in"])
        self.assertEqual(len(raw["inbounds"]), 2)  # the supervisor's copy is untouched
        parse_config(out, lambda _: None)  # the workers' config is valid

    def test_handler_service_refused(self) -> None:
        service = handler_with_workers()
        self.assertEqual(sorted(service.methods), sorted(HANDLER_METHODS))
        with self.assertRaises(GrpcError) as caught:
            service.methods["AddInbound"](b"")
        self.assertEqual(caught.exception.status_code, Status.FAILED_PRECONDITION)
        self.assertIn("--workers", caught.exception.message)

    def test_restart_logger_waits_for_workers(self) -> None:
        from vtwist.app.api.v2raypb import app_log_command_config_pb2 as pb

        waiting: defer.Deferred[None] = defer.Deferred()
        service = LoggerService(ApiContext(reactor=None, restart_logger=lambda: waiting))
        answer = service.RestartLogger(pb.RestartLoggerRequest().SerializeToString())
        self.assertNoResult(answer)
        waiting.callback(None)
        self.assertEqual(self.successResultOf(answer), b"")
        failing: defer.Deferred[None] = defer.Deferred()
        service = LoggerService(ApiContext(reactor=None, restart_logger=lambda: failing))
        answer = service.RestartLogger(b"")
        failing.errback(RuntimeError("worker 1: cannot open /x"))
        error = self.failureResultOf(answer, GrpcError).value
        self.assertEqual(error.status_code, Status.UNKNOWN)
        self.assertIn("worker 1: cannot open /x", error.message)

    def test_reload_keeps_the_supervisors_endpoints(self) -> None:
        """A reload that changes the metrics or API: a warning (they are the supervisor's,
        kept until the next start); the workers' new config still leaves the API out."""
        import os
        import tempfile

        from twisted.internet.task import Clock

        from vtwist.app.workers import Supervisor
        from vtwist.testing.doubles import log_lines

        raw = {"api": {"tag": "api", "services": ["StatsService"]}, "stats": {},
               "metrics": {"port": 9100},
               "inbounds": [{"tag": "in", "port": 1080, "protocol": "socks"},
                            {"tag": "api", "port": 10085, "listen": "127.0.0.1",
                             "protocol": "dokodemo-door",
                             "settings": {"address": "127.0.0.1"}}],
               "outbounds": [{"protocol": "freedom"}],
               "routing": {"rules": [{"type": "field", "inboundTag": ["api"],
                                      "outboundTag": "api"}]}}
        changed = {**raw, "metrics": {"port": 9200}}
        configs = [raw, changed]
        supervisor = Supervisor(raw, 1, Clock(), load=lambda: configs.pop(0))
        supervisor._dir = tempfile.mkdtemp()
        self.addCleanup(supervisor._cleanup)
        lines = log_lines(self, "vtwist")
        self.assertTrue(supervisor.reload())
        self.assertEqual([line for line in lines if "supervisor's" in line], [])
        self.assertTrue(supervisor.reload())
        self.assertEqual(len([line for line in lines if "takes effect at the next start"
                              in line]), 1, lines)
        with open(os.path.join(supervisor._dir, "config.json")) as f:
            written = json.load(f)
        self.assertEqual([i["tag"] for i in written["inbounds"]], ["in"])
        self.assertEqual(written["metrics"], {"port": 9200})

    def test_broadcast_answers_once_all_did(self) -> None:
        """RestartLogger's broadcast: done once every worker answered; a worker that is
        gone counts as done; a worker's error is the call's error, naming the worker."""
        from twisted.internet.task import Clock

        from vtwist.app.workers import Supervisor, _WorkerProcess

        supervisor = Supervisor({}, 3, Clock())
        channels = []
        for index in range(3):
            worker = supervisor.workers[index] = _WorkerProcess(supervisor, index)
            worker.channel = control.SupervisorChannel(lambda _: None, lambda: None)
            worker.channel.makeConnection(StringTransport())
            channels.append(worker.channel)

        def answer(channel: control.SupervisorChannel, error: str | None = None) -> None:
            request = json.loads(channel.transport.value()[4:])["request"]
            channel.transport.clear()
            channel.dataReceived(control.encode({"reply": request, "error": error}))

        done = supervisor.broadcast("restart_logger")
        answer(channels[0])
        channels[1].connectionLost(None)  # died meanwhile
        self.assertNoResult(done)
        answer(channels[2])
        self.successResultOf(done)

        failing = supervisor.broadcast("restart_logger")  # worker 1 is gone: not asked
        answer(channels[0], "cannot open /var/log/x")
        answer(channels[2])
        self.assertEqual(self.failureResultOf(failing).getErrorMessage(),
                         "worker 0: cannot open /var/log/x")

