"""``--workers N`` end to end: real processes sharing real ports on 127.0.0.1.

Which worker serves a connection is read from the kernel: the socket's inode in
``/proc/net/tcp`` and the worker whose ``/proc/PID/fd`` holds it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.netutil import free_port
from vtwist.address import Destination
from vtwist.app.drain import DRAIN_TIMEOUT
from vtwist.proxy.shadowsocks.aead import Account as SSAccount
from vtwist.proxy.shadowsocks.codec import ClientStream
from vtwist.proxy.vmess.handshake import ClientSession
from vtwist.proxy.vmess.users import Account

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])])}
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


# -- the kernel's view: which process holds a TCP socket ----------------------------------------
def _tcp_inode(local_port: int, remote_port: int) -> int | None:
    """The inode of the IPv4 TCP socket local_port -> remote_port on 127.0.0.1."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.split(":")[1], 16) == local_port and \
                    int(remote.split(":")[1], 16) == remote_port and inode:
                return inode
    return None


def socket_owner(local_port: int, remote_port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` holds the socket ``local_port -> remote_port`` (None: none yet)."""
    inode = _tcp_inode(local_port, remote_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    return None


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def wait_for(check: Callable[[], Any], what: Callable[[], str] | str,
             timeout: float = 60.0) -> Any:
    """Poll ``check()`` until it returns something true; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(what() if callable(what) else what)


# -- a target that counts and echoes -------------------------------------------------------------
class Target:
    """A threaded TCP echo server on 127.0.0.1 that records each client's port."""

    def __init__(self) -> None:
        peers = self.peers = []  # type: list[int]
        #: the processes to look for as each connection's source; their ids, as found
        self.sources: list[int] = []
        owners = self.owners = []  # type: list[int | None]
        me = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                peers.append(self.client_address[1])
                if me.sources:  # the connecting socket is open now: find its process
                    owners.append(socket_owner(self.client_address[1], me.port, me.sources))
                while True:
                    try:
                        data = self.request.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    self.request.sendall(data)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def socks_connect(port: int, target: int) -> socket.socket:
    """A blocking SOCKS5 CONNECT to 127.0.0.1:``target`` through 127.0.0.1:``port``."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack("!H", target))
    reply = b""
    while len(reply) < 10:
        chunk = s.recv(10 - len(reply))
        if not chunk:
            raise AssertionError("SOCKS server closed")
        reply += chunk
    assert reply[1] == 0, reply
    return s


def echo_through(s: socket.socket, size: int) -> bool:
    """Send ``size`` bytes, read them back; True when intact."""
    data = os.urandom(size)
    got = bytearray()
    sender = threading.Thread(target=s.sendall, args=(data,))
    sender.start()
    while len(got) < size:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    sender.join()
    return hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


class WorkersHarness(SynchronousTestCase):
    """Runs ``python -m vtwist run --workers N`` (or twistd's) in a temporary directory,
    with an echo target; no tests of its own."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp()
        self.out_path = os.path.join(self.dir, "out.log")
        self.access = os.path.join(self.dir, "access.log")
        self.target = Target()
        self.addCleanup(self.target.close)

    def output(self) -> str:
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def access_lines(self) -> str:
        try:
            with open(self.access, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def write_config(self, data: dict[str, Any], name: str = "config.json") -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            json.dump(data, f)
        return path

    def spawn(self, argv: list[str], out: str | None = None) -> subprocess.Popen[bytes]:
        log = open(out or self.out_path, "ab")  # noqa: SIM115 - closed in the cleanup
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
                                env=ENV)

        def cleanup() -> None:
            workers = children(proc.pid)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for pid in workers:  # never leave one behind, even when a test failed
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            log.close()
        self.addCleanup(cleanup)
        return proc

    def run_workers(self, config: dict[str, Any], count: int = 2,
                    twistd: bool = False) -> tuple[subprocess.Popen[bytes], list[int]]:
        path = self.write_config(config)
        if twistd:
            argv = [*TWISTD, "-n", "--pidfile=", "vtwist", "--workers", str(count),
                    "--config", path]
        else:
            argv = [sys.executable, "-m", "vtwist", "run", "--workers", str(count),
                    "--config", path]
        proc = self.spawn(argv)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode}:\n{self.output()}")
            return f"{count} workers listening" in self.output()

        wait_for(ready, lambda: f"workers not listening:\n{self.output()}", 120)
        pids = children(proc.pid)
        self.assertEqual(len(pids), count, self.output())
        return proc, pids

    def vmess_client(self, server_port: int, user: str,
                     stream: dict[str, Any] | None = None) -> int:
        """A vtwist client in one process, SOCKS5 -> VMess to ``server_port`` (over
        ``stream``), listening; its SOCKS port."""
        socks_port = free_port()
        outbound: dict[str, Any] = {"protocol": "vmess", "settings": {"vnext": [{
            "address": "127.0.0.1", "port": server_port,
            "users": [{"id": user, "alterId": 0}]}]}}
        if stream is not None:
            outbound["streamSettings"] = stream
        client = {"log": {"loglevel": "warning"},
                  "inbounds": [{"port": socks_port, "listen": "127.0.0.1",
                                "protocol": "socks", "settings": {"udp": False}}],
                  "outbounds": [outbound]}
        client_proc = self.spawn([sys.executable, "-m", "vtwist", "run", "--config",
                                  self.write_config(client, "client.json")],
                                 os.path.join(self.dir, "client.log"))
        wait_for(lambda: _accepts(socks_port) or client_proc.poll() is not None,
                 "the client does not listen", 60)
        return socks_port

    def kcp_workers(self) -> tuple[subprocess.Popen[bytes], list[int], int]:
        """A VMess server over mKCP in 2 workers (the target's connections are traced to
        them) and a vtwist client in front: (supervisor, worker pids, SOCKS port)."""
        server_port, user = free_port(udp_too=True), str(uuid.uuid4())
        kcp = {"network": "kcp", "kcpSettings": {"uplinkCapacity": 100,
                                                 "downlinkCapacity": 100}}
        server = {"log": {"loglevel": "info"},
                  "inbounds": [{"port": server_port, "listen": "127.0.0.1",
                                "protocol": "vmess", "streamSettings": kcp,
                                "settings": {"clients": [{"id": user, "alterId": 0}]}}],
                  "outbounds": [{"protocol": "freedom"}]}
        proc, pids = self.run_workers(server)
        self.target.sources = pids
        return proc, pids, self.vmess_client(server_port, user, kcp)

    def dokodemo(self, port: int) -> dict[str, Any]:
        return {"log": {"loglevel": "info", "access": self.access},
                "inbounds": [{"port": port, "listen": "127.0.0.1",
                              "protocol": "dokodemo-door",
                              "settings": {"address": "127.0.0.1", "port": self.target.port,
                                           "network": "tcp"}}],
                "outbounds": [{"protocol": "freedom"}]}

    def owner(self, s: socket.socket, port: int, pids: list[int]) -> int:
        """The worker holding the server side of client socket ``s`` (to ``port``)."""
        mine = s.getsockname()[1]
        return wait_for(lambda: socket_owner(port, mine, pids),
                        f"no worker holds the connection from port {mine}", 30)



class WorkersTests(WorkersHarness):
    """``python -m vtwist run --workers 2`` (and twistd's ``--workers``)."""

    def test_connections_spread_over_workers(self) -> None:
        """Connections from many source ports land on both workers (SO_REUSEPORT), and
        every one is relayed intact; SIGTERM then stops the supervisor and every worker."""
        port = free_port()
        proc, pids = self.run_workers(self.dokodemo(port))
        owners = []
        sockets = []
        for _ in range(24):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            sockets.append(s)
            self.assertTrue(echo_through(s, 4096))
            owners.append(self.owner(s, port, pids))
        self.assertEqual(set(owners), set(pids), owners)
        for s in sockets:
            s.close()

        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=60), 0, self.output())
        for pid in pids:  # the supervisor waited for (and reaped) every worker
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} still runs")
        self.assertNotIn("Traceback", self.output())

    def test_dead_worker_comes_back(self) -> None:
        """A worker killed with SIGKILL is started again; the other one serves meanwhile."""
        port = free_port()
        proc, pids = self.run_workers(self.dokodemo(port))
        os.kill(pids[0], signal.SIGKILL)
        # connections queued on the dying worker's socket are lost with it: connect after
        wait_for(lambda: pids[0] not in children(proc.pid), "the worker does not die", 30)
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.assertTrue(echo_through(s, 1000))
        s.close()
        fresh = wait_for(lambda: [p for p in children(proc.pid) if p not in pids]
                         and "workers listening" in self.output(),
                         lambda: f"no new worker:\n{self.output()}", 120)
        self.assertTrue(fresh)
        wait_for(lambda: self.output().count("ready") >= 3,
                 lambda: f"the new worker is not ready:\n{self.output()}", 120)
        self.assertEqual(len(children(proc.pid)), 2)
        self.assertIn("exited with signal 9: starting it again", self.output())

    def replayed_on_both(self, config: dict[str, Any], request: bytes, refusal: str) -> None:
        """``request`` accepted by one worker, then replayed on new connections until a
        replay reached the other worker: each replay is refused (its access line), and only
        the first connected to the target."""
        port = config["inbounds"][0]["port"]
        proc, pids = self.run_workers(config)
        first = socket.create_connection(("127.0.0.1", port), timeout=60)
        accepted_by = self.owner(first, port, pids)
        first.sendall(request)
        wait_for(lambda: self.target.peers, "the first request was not accepted", 60)

        refused_by: set[int] = set()
        for _ in range(60):
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            refused_by.add(self.owner(s, port, pids))
            s.sendall(request)
            mine = s.getsockname()[1]
            wait_for(lambda: f"127.0.0.1:{mine} rejected {refusal}"  # noqa: B023
                     in self.access_lines(),
                     lambda: f"no refusal:\n{self.access_lines()}", 60)
            s.close()
            if refused_by - {accepted_by}:
                break
        self.assertTrue(refused_by - {accepted_by}, "no replay reached the other worker")
        self.assertEqual(len(self.target.peers), 1)  # only the first request connected
        first.close()

    def test_vmess_replay_refused_by_other_worker(self) -> None:
        """A VMess AEAD header accepted by one worker is refused when replayed, also by the
        other worker (the shared replay table)."""
        user = uuid.uuid4()
        config = {"log": {"loglevel": "info", "access": self.access},
                  "inbounds": [{"port": free_port(), "listen": "127.0.0.1",
                                "protocol": "vmess",
                                "settings": {"clients": [{"id": str(user), "alterId": 0}]}}],
                  "outbounds": [{"protocol": "freedom"}]}
        session = ClientSession(Account(user.bytes), Destination.tcp("127.0.0.1",
                                                                     self.target.port))
        self.replayed_on_both(config, session.request_header(time.time()),
                              "vmess: replayed AuthID")

    def test_shadowsocks_salt_replay_refused_by_other_worker(self) -> None:
        """A Shadowsocks request replayed (same salt) to the other worker is refused."""
        method, password = "aes-128-gcm", "workers-test"
        config = {"log": {"loglevel": "info", "access": self.access},
                  "inbounds": [{"port": free_port(), "listen": "127.0.0.1",
                                "protocol": "shadowsocks",
                                "settings": {"method": method, "password": password}}],
                  "outbounds": [{"protocol": "freedom"}]}
        stream = ClientStream(SSAccount.from_password(method, password),
                              Destination.tcp("127.0.0.1", self.target.port))
        self.replayed_on_both(config, b"".join(stream.encode(b"hello")),
                              "shadowsocks: replayed salt")

    def test_workers_die_with_supervisor(self) -> None:
        """SIGKILL to the supervisor (no chance to stop them): the workers go too."""
        proc, pids = self.run_workers(self.dokodemo(free_port()))
        with open(f"/proc/{pids[0]}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        private = os.path.dirname(argv[argv.index("--config") + 1])
        self.assertTrue(os.path.isdir(private), private)
        proc.kill()
        proc.wait()
        for pid in pids:
            wait_for(lambda: not _running(pid), f"worker {pid} outlived its "  # noqa: B023
                     "supervisor", 60)
        # the supervisor could not clean up: its workers removed its config copy
        wait_for(lambda: not os.path.exists(private), f"{private} left behind", 30)

    def test_kcp_sessions_stay_whole(self) -> None:
        """mKCP sessions (one UDP socket each on the client) through 2 server workers:
        every session's echo is intact, and the sessions were spread over both workers."""
        proc, pids, socks_port = self.kcp_workers()

        results: list[bool] = []

        def one() -> None:
            s = socks_connect(socks_port, self.target.port)
            try:
                results.append(echo_through(s, 64 * 1024))
            finally:
                s.close()

        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(results, [True] * 16)
        # the freedom side of each session: the worker that connected to the target
        self.assertEqual(set(self.target.owners), set(pids), self.target.owners)

    def test_sigterm_drains(self) -> None:
        """SIGTERM to a worker with a connection open: it stops accepting (new connections
        all reach the other worker), the open connection goes on relaying, and once it
        closes the worker exits (status 0, long before the drain's limit) and comes back."""
        port = free_port()
        proc, pids = self.run_workers(self.dokodemo(port))
        held = socket.create_connection(("127.0.0.1", port), timeout=60)
        draining = self.owner(held, port, pids)
        self.assertTrue(echo_through(held, 1000))
        os.kill(draining, signal.SIGTERM)
        wait_for(lambda: "draining 1 connection(s)" in self.output(),
                 lambda: f"no drain:\n{self.output()}", 30)
        self.assertTrue(echo_through(held, 200_000))  # still relayed
        for _ in range(12):  # every new connection goes to the worker that still accepts
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            self.assertNotEqual(self.owner(s, port, pids), draining)
            self.assertTrue(echo_through(s, 100))
            s.close()
        self.assertIn(draining, children(proc.pid))
        closed_at = time.monotonic()
        held.close()
        wait_for(lambda: draining not in children(proc.pid), "the worker does not stop", 30)
        self.assertLess(time.monotonic() - closed_at, DRAIN_TIMEOUT - 2)
        wait_for(lambda: "exited with status 0: starting it again" in self.output(),
                 lambda: f"not restarted:\n{self.output()}", 30)
        self.assertNotIn("still open after", self.output())

    def test_kcp_sessions_survive_another_workers_restart(self) -> None:
        """A worker killed and started again: the mKCP sessions of the other worker go on
        whole, before and after the restart (the supervisor keeps the dead worker's UDP
        socket, so the kernel's hash of every other flow stays the same)."""
        proc, pids, socks_port = self.kcp_workers()
        # sessions one at a time, so the target's n-th connection is the n-th session
        sessions: list[tuple[socket.socket, int]] = []
        try:
            while len(sessions) < 32 and len({owner for _, owner in sessions}) < 2 \
                    or len(sessions) < 8:
                s = socks_connect(socks_port, self.target.port)
                self.assertTrue(echo_through(s, 1024))
                owner = self.target.owners[len(sessions)]
                self.assertIn(owner, pids)
                sessions.append((s, owner))
            killed = sessions[0][1]
            survivors = [s for s, owner in sessions if owner != killed]
            self.assertTrue(survivors, "every session on one worker")
            os.kill(killed, signal.SIGKILL)
            wait_for(lambda: killed not in children(proc.pid), "the worker does not die", 30)
            for s in survivors:  # the other worker's sessions while the dead one is away
                self.assertTrue(echo_through(s, 1024))
            wait_for(lambda: self.output().count(") ready") >= 3,
                     lambda: f"the worker is not back:\n{self.output()}", 120)
            for s in survivors:  # ... and once it is back
                s.settimeout(15)
                self.assertTrue(echo_through(s, 32 * 1024))
        finally:
            for s, _ in sessions:
                s.close()

    def test_bad_config_fails_before_workers(self) -> None:
        """An invalid config: status 1 and the error, and no worker was started."""
        path = self.write_config({"inbounds": [{"port": "x", "protocol": "socks"}]})
        done = subprocess.run([sys.executable, "-m", "vtwist", "run", "--workers", "2",
                               "--config", path], capture_output=True, text=True,
                              timeout=120, cwd=self.dir, env=ENV)
        self.assertEqual(done.returncode, 1, done.stderr)
        self.assertIn("config error", done.stderr)
        self.assertNotIn("worker", done.stderr)

    def test_port_in_use_stops_everything(self) -> None:
        """A port another program holds (without SO_REUSEPORT): the workers cannot listen,
        the supervisor stops them and exits 1, with the bind error in its output."""
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        self.addCleanup(busy.close)
        path = self.write_config(self.dokodemo(busy.getsockname()[1]))
        proc = self.spawn([sys.executable, "-m", "vtwist", "run", "--workers", "2",
                           "--config", path])
        try:
            status = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            tree = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:24,etime,cmd", "--ppid",
                                   str(proc.pid), "-p", str(proc.pid)],
                                  capture_output=True, text=True).stdout
            self.fail(f"still running:\n{tree}\n{self.output()}")
        self.assertEqual(status, 1, self.output())
        self.assertIn("cannot listen", self.output())
        self.assertIn("before it was listening: stopping", self.output())

    def test_open_files_limit_raised(self) -> None:
        """At start-up the soft RLIMIT_NOFILE goes up to the hard limit, and is logged with
        the connections it allows (issue 20)."""
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard <= 256:
            self.skipTest(f"hard limit {hard}: nothing to raise")
        config = self.dokodemo(free_port())
        config["log"]["loglevel"] = "warning"  # a start-up line, shown at warning too
        path = self.write_config(config)
        log = open(self.out_path, "ab")  # noqa: SIM115 - closed below
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            [sys.executable, "-m", "vtwist", "run", "--config", path], stdout=log,
            stderr=subprocess.STDOUT, cwd=self.dir, env=ENV,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
        self.addCleanup(lambda: (proc.poll() is None and proc.kill(), proc.wait()))
        wait_for(lambda: "open files limit" in self.output(),
                 lambda: f"no limit line:\n{self.output()}", 60)
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        self.assertEqual(int(line.split()[3]), hard, line)
        self.assertIn(f"open files limit {hard}: about {(hard - 64) // 2} relayed "
                      f"connections per process ({(hard - 64) // 6} if every one splices)",
                      self.output())

    def test_open_files_limit_each_worker(self) -> None:
        """With ``--workers 2`` the supervisor and each worker raise the limit and log
        it."""
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        proc, pids = self.run_workers(self.dokodemo(free_port()))
        for pid in [proc.pid, *pids]:
            with open(f"/proc/{pid}/limits") as f:
                line = next(x for x in f if x.startswith("Max open files"))
            self.assertEqual(line.split()[3], line.split()[4], line)  # soft == hard
        wait_for(lambda: self.output().count("open files limit ") == 3,
                 lambda: f"not three limit lines:\n{self.output()}", 30)
        if hard != resource.RLIM_INFINITY:
            self.assertEqual(self.output().count(f"open files limit {hard}: about "), 3)

    def test_bad_workers_value(self) -> None:
        """``--workers 0`` / ``--workers x``: a usage error."""
        for value in ("0", "x"):
            done = subprocess.run([sys.executable, "-m", "vtwist", "run", "--workers", value],
                                  capture_output=True, text=True, timeout=120, cwd=self.dir,
                                  env=ENV)
            self.assertEqual(done.returncode, 2, done.stderr)
            self.assertIn("--workers", done.stderr)

    def test_run_reload_command_reaches_every_worker(self) -> None:
        """``run --workers 2 --pidfile`` + ``vtwist reload``: the supervisor's pid is in the
        file, and a port added by the reload listens in both workers."""
        port, second = free_port(), free_port()
        config = self.dokodemo(port)
        path = self.write_config(config)
        pidfile = os.path.join(self.dir, "vtwist.pid")
        proc = self.spawn([sys.executable, "-m", "vtwist", "run", "--workers", "2",
                           "--config", path, "--pidfile", pidfile])
        wait_for(lambda: "2 workers listening" in self.output() and os.path.exists(pidfile),
                 lambda: f"not ready:\n{self.output()}", 120)
        pids = children(proc.pid)
        config["inbounds"].append({**config["inbounds"][0], "port": second, "tag": "two"})
        self.write_config(config)
        done = subprocess.run([sys.executable, "-m", "vtwist", "reload", "--pidfile", pidfile],
                              capture_output=True, text=True, timeout=60, cwd=self.dir,
                              env=ENV)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn(f"sent SIGHUP to {proc.pid}", done.stdout)
        wait_for(lambda: _listeners(second) == set(pids),
                 lambda: f"not every worker listens on {second}: {_listeners(second)}\n"
                         f"{self.output()}", 120)
        self.assertIn("reload: passed to 2 workers", self.output())

    def test_twistd_workers_and_reload(self) -> None:
        """``twistd -n vtwist --workers 2``: both workers serve; SIGHUP reaches each of them
        (a second inbound listens in both); SIGTERM stops them all."""
        port, second = free_port(), free_port()
        config = self.dokodemo(port)
        proc, pids = self.run_workers(config, twistd=True)
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.assertTrue(echo_through(s, 1000))
        s.close()
        config["inbounds"].append({**config["inbounds"][0], "port": second, "tag": "two"})
        self.write_config(config)
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: _listeners(second) == set(pids),
                 lambda: f"not every worker listens on {second}: {_listeners(second)}\n"
                         f"{self.output()}", 120)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        for pid in pids:
            wait_for(lambda: not os.path.exists(f"/proc/{pid}"),  # noqa: B023
                     f"worker {pid} still runs", 30)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def _listeners(port: int) -> set[int]:
    """The processes with a TCP socket listening on 127.0.0.1:``port``."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    owners = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    owners.add(int(pid))
        except OSError:
            continue
    return owners


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class ParseWorkersTests(SynchronousTestCase):

    def test_values(self) -> None:
        from vtwist.app.workers import parse_workers

        self.assertEqual(parse_workers("3"), 3)
        self.assertEqual(parse_workers(2), 2)
        self.assertEqual(parse_workers("auto"), len(os.sched_getaffinity(0)))
        for bad in ("0", "-1", "x", ""):
            self.assertRaises(ValueError, parse_workers, bad)


class CrashLoopTests(SynchronousTestCase):
    """The supervisor restarts a dying worker, but not forever (clock-driven)."""

    def supervisor(self) -> tuple[Any, Any, list[int], list[int]]:
        from twisted.internet import task
        from twisted.internet.error import ReactorNotRunning

        from vtwist.app.workers import Supervisor

        clock = task.Clock()
        clock.running = True  # type: ignore[attr-defined]
        stopped: list[int] = []

        def stop() -> None:  # as a reactor: a second stop raises
            if stopped:
                raise ReactorNotRunning("Can't stop reactor that has already been stopped.")
            stopped.append(1)

        clock.stop = stop  # type: ignore[attr-defined]
        sup = Supervisor({}, 2, clock)
        spawned: list[int] = []
        sup._spawn = spawned.append  # type: ignore[method-assign]
        return sup, clock, stopped, spawned

    def test_gives_up_on_a_crash_loop(self) -> None:
        from twisted.internet.error import ProcessTerminated

        from vtwist.app.workers import MAX_RESTARTS, _WorkerProcess

        sup, clock, stopped, spawned = self.supervisor()
        worker = _WorkerProcess(sup, 1)
        worker.ready, worker.pid = True, 4242
        for _ in range(MAX_RESTARTS):
            sup.worker_ended(worker, ProcessTerminated(signal=9))
            clock.advance(2)
        self.assertEqual((spawned, sup.failed, stopped), ([1] * MAX_RESTARTS, False, []))
        sup.worker_ended(worker, ProcessTerminated(signal=9))
        self.assertEqual((sup.failed, stopped), (True, [1]))

    def test_spaced_deaths_are_restarted(self) -> None:
        from twisted.internet.error import ProcessTerminated

        from vtwist.app.workers import MAX_RESTARTS, RESTART_WINDOW, _WorkerProcess

        sup, clock, stopped, spawned = self.supervisor()
        worker = _WorkerProcess(sup, 0)
        worker.ready, worker.pid = True, 4242
        for _ in range(MAX_RESTARTS * 3):
            sup.worker_ended(worker, ProcessTerminated(exitCode=1))
            clock.advance(RESTART_WINDOW / MAX_RESTARTS + 1)
        self.assertEqual((len(spawned), sup.failed, stopped), (MAX_RESTARTS * 3, False, []))

    def test_two_failed_starts_at_once(self) -> None:
        """Both workers fail before listening in the same moment: one reactor stop, and
        each worker's end still fires (stopService waits on them)."""
        from twisted.internet.error import ProcessTerminated
        from twisted.python.failure import Failure

        from vtwist.app.workers import _WorkerProcess

        sup, clock, stopped, spawned = self.supervisor()
        workers = [_WorkerProcess(sup, i) for i in range(2)]
        for worker in workers:
            worker.processEnded(Failure(ProcessTerminated(exitCode=1)))
        self.assertEqual((sup.failed, stopped), (True, [1]))
        self.assertTrue(all(w.ended.called for w in workers))
        self.assertEqual(spawned, [])

    def test_slow_start_fails(self) -> None:
        """A worker not listening after START_TIMEOUT: a failed start, the reactor stops."""
        from vtwist.app.workers import START_TIMEOUT, _WorkerProcess

        sup, clock, stopped, spawned = self.supervisor()
        sup.workers = [_WorkerProcess(sup, 0), _WorkerProcess(sup, 1)]
        sup.workers[0].ready = True
        sup._start_timer = clock.callLater(START_TIMEOUT, sup._too_slow)
        clock.advance(START_TIMEOUT - 1)
        self.assertEqual(stopped, [])
        clock.advance(1)
        self.assertEqual((sup.failed, stopped), (True, [1]))
