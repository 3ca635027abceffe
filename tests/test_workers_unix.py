"""``--workers N`` with UNIX socket listeners: the supervisor binds each socket, every worker
accepts on it. Real processes, real sockets.

Which worker served a connection is read from the kernel: the worker holding the TCP socket
that connected to the echo target (:func:`tests.test_workers.socket_owner`).
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import uuid
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.netutil import free_port
from tests.test_workers import (
    ENV,
    WorkersHarness,
    _accepts,
    children,
    echo_through,
    socks_connect,
    wait_for,
)


def socks_unix(address: str, target: int) -> socket.socket:
    """A blocking SOCKS5 CONNECT to 127.0.0.1:``target`` through the UNIX socket
    ``address`` (a path, or a NUL-led abstract name)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    try:
        s.connect(address)
        s.sendall(b"\x05\x01\x00")
        assert s.recv(2) == b"\x05\x00"
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                  + struct.pack("!H", target))
        reply = b""
        while len(reply) < 10:
            chunk = s.recv(10 - len(reply))
            if not chunk:
                raise AssertionError("SOCKS server closed")
            reply += chunk
        assert reply[1] == 0, reply
    except BaseException:
        s.close()
        raise
    return s


def abstract_names() -> str:
    """The abstract UNIX socket names bound on this machine (``/proc/net/unix``)."""
    with open("/proc/net/unix", errors="replace") as f:
        return f.read()


class UnixWorkersTests(WorkersHarness):
    """``python -m vtwist run --workers 2`` with SOCKS and VMess on UNIX sockets."""

    def socks(self, listen: str, **extra: Any) -> dict[str, Any]:
        return {"log": {"loglevel": "info", "access": self.access},
                "inbounds": [{"port": 1080, "listen": listen, "protocol": "socks",
                              "settings": {"udp": False}, **extra}],
                "outbounds": [{"protocol": "freedom"}]}

    def serve_until_both(self, address: str, pids: list[int], at_most: int = 200) -> None:
        """Connections through ``address`` until each of ``pids`` served one: every one
        relays intact."""
        self.target.owners.clear()
        self.target.sources = pids
        for _ in range(at_most):
            s = socks_unix(address, self.target.port)
            try:
                self.assertTrue(echo_through(s, 4096))
            finally:
                s.close()
            if set(pids) <= set(self.target.owners):
                return
        self.fail(f"not served by every worker {pids}: {self.target.owners}")

    def restarted(self, proc: subprocess.Popen[bytes], gone: int) -> int:
        """The worker started in place of ``gone``, once it is ready."""
        wait_for(lambda: gone not in children(proc.pid), f"{gone} does not exit", 30)
        fresh = wait_for(lambda: [p for p in children(proc.pid) if p != gone
                                  and f"(pid {p}) ready" not in self.output()
                                  and f"(pid {p})" not in self.output().split(
                                      "workers listening")[0]],
                         lambda: f"no new worker:\n{self.output()}", 60)[0]
        wait_for(lambda: f"(pid {fresh}) ready" in self.output(),
                 lambda: f"worker {fresh} not ready:\n{self.output()}", 120)
        return fresh  # type: ignore[no-any-return]

    def test_path_socket_shared_restarted_and_removed(self) -> None:
        """SOCKS on a socket path with 2 workers: a stale socket (its lock naming a dead
        process) is replaced; the socket is world-writable with its lock naming the
        supervisor; connections are served by both workers; a worker stopped (SIGTERM) or
        killed (SIGKILL) is started again and the path stays and serves; SIGTERM stops
        everything and removes the path and its lock."""
        path = os.path.join(self.dir, "socks.sock")
        stale = socket.socket(socket.AF_UNIX)  # a socket file nobody listens on
        stale.bind(path)
        stale.close()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        os.symlink(dead, path + ".lock")

        proc, pids = self.run_workers(self.socks(path))
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o666)
        self.assertEqual(os.readlink(path + ".lock"), str(proc.pid))
        self.serve_until_both(path, pids)

        os.kill(pids[0], signal.SIGTERM)  # a worker's own stop must leave the path
        first = self.restarted(proc, pids[0])
        self.assertTrue(os.path.exists(path))
        os.kill(pids[1], signal.SIGKILL)
        second = self.restarted(proc, pids[1])
        self.assertEqual(sorted(children(proc.pid)), sorted([first, second]))
        self.serve_until_both(path, [first, second])
        self.assertIn("exited with signal 9: starting it again", self.output())

        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=60), 0, self.output())
        self.assertFalse(os.path.exists(path), "the socket path was left behind")
        self.assertFalse(os.path.lexists(path + ".lock"), "the lock was left behind")
        self.assertNotIn("Traceback", self.output())

    def test_vmess_domainsocket_abstract_and_socks_at_name(self) -> None:
        """VMess over ``"network": "domainsocket"`` on a padded abstract name (a vtwist
        client in front) and SOCKS on an ``@name`` listen, both with 2 workers: every
        connection relays intact and both workers serve each; after SIGTERM neither name
        is bound any more."""
        tag = uuid.uuid4().hex[:12]
        vmess_name, socks_name = f"vtwist-vmess-{tag}", f"vtwist-socks-{tag}"
        ds = {"network": "domainsocket",
              "dsSettings": {"path": vmess_name, "abstract": True, "padding": True}}
        user = str(uuid.uuid4())
        server = {"log": {"loglevel": "info"},
                  "inbounds": [{"port": 1, "protocol": "vmess", "streamSettings": ds,
                                "settings": {"clients": [{"id": user, "alterId": 0}]}},
                               {"port": 1080, "listen": "@" + socks_name,
                                "protocol": "socks", "settings": {"udp": False}}],
                  "outbounds": [{"protocol": "freedom"}]}
        proc, pids = self.run_workers(server)
        self.assertIn("@" + vmess_name + "@", abstract_names())  # padded: '@' for NULs

        socks_port = free_port()
        client = {"log": {"loglevel": "warning"},
                  "inbounds": [{"port": socks_port, "listen": "127.0.0.1",
                                "protocol": "socks", "settings": {"udp": False}}],
                  "outbounds": [{"protocol": "vmess", "streamSettings": ds,
                                 "settings": {"vnext": [{
                                     "address": "127.0.0.1", "port": 1,
                                     "users": [{"id": user, "alterId": 0}]}]}}]}
        client_proc = self.spawn([sys.executable, "-m", "vtwist", "run", "--config",
                                  self.write_config(client, "client.json")],
                                 os.path.join(self.dir, "client.log"))
        wait_for(lambda: _accepts(socks_port) or client_proc.poll() is not None,
                 "the client does not listen", 60)
        self.target.sources = pids
        results: list[bool] = []

        def one() -> None:
            s = socks_connect(socks_port, self.target.port)
            try:
                results.append(echo_through(s, 32 * 1024))
            finally:
                s.close()

        for _ in range(6):  # rounds of 8 at once until both workers served one
            threads = [threading.Thread(target=one) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            if set(pids) <= set(self.target.owners):
                break
        self.assertEqual(results, [True] * len(results))
        self.assertEqual(set(self.target.owners) & set(pids), set(pids), self.target.owners)

        self.serve_until_both("\0" + socks_name, pids)

        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(timeout=60), 0, self.output())
        names = abstract_names()
        self.assertNotIn(vmess_name, names)
        self.assertNotIn(socks_name, names)

    def test_reload_keeps_or_refuses_unix_listeners(self) -> None:
        """SIGHUP: a change that replaces the inbound on the socket path (its port) reaches
        both workers, which take the same socket again (the path stays, both serve); a
        reload that moves the path is refused with one error line, the old path still
        serves and the new one never appears."""
        path = os.path.join(self.dir, "socks.sock")
        config = self.socks(path)
        proc, pids = self.run_workers(config)
        config["inbounds"][0]["port"] = 1081  # unused with a path, but a new listener
        self.write_config(config)
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: self.output().count("reload: inbounds: 1 add, 1 remove") == 2,
                 lambda: f"the workers did not reload:\n{self.output()}", 60)
        self.assertTrue(stat.S_ISSOCK(os.stat(path).st_mode))
        self.serve_until_both(path, pids)

        moved = os.path.join(self.dir, "moved.sock")
        config["inbounds"][0]["listen"] = moved
        self.write_config(config)
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(lambda: "reload: the UNIX socket listeners change" in self.output(),
                 lambda: f"the reload was not refused:\n{self.output()}", 60)
        self.assertIn(f"({path} -> {moved})", self.output())
        self.assertEqual(self.output().count("reload: inbounds:"), 2)  # not passed on
        self.assertFalse(os.path.exists(moved))
        self.serve_until_both(path, pids)
        self.assertEqual(sorted(children(proc.pid)), sorted(pids))

    def test_socket_held_by_another_process(self) -> None:
        """A socket path whose lock a live process holds: the supervisor cannot listen,
        starts no worker and exits 1 naming the socket."""
        path = os.path.join(self.dir, "socks.sock")
        os.symlink(str(os.getpid()), path + ".lock")  # this test process: alive
        done = subprocess.run([sys.executable, "-m", "vtwist", "run", "--workers", "2",
                               "--config", self.write_config(self.socks(path))],
                              capture_output=True, text=True, timeout=120, cwd=self.dir,
                              env=ENV)
        self.assertEqual(done.returncode, 1, done.stdout + done.stderr)
        output = done.stdout + done.stderr
        self.assertIn(f"cannot listen on the UNIX socket {path}", output)
        self.assertNotIn("ready", output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(os.readlink(path + ".lock"), str(os.getpid()))  # not taken


class UnixListenersTests(SynchronousTestCase):
    """:func:`vtwist.app.workers.unix_listeners`: which sockets the supervisor binds."""

    def test_addresses(self) -> None:
        from vtwist.app.workers import unix_listeners

        def inbound(**fields: Any) -> dict[str, Any]:
            return {"port": 1080, "protocol": "socks", **fields}

        config = {"inbounds": [
            inbound(listen="127.0.0.1"),
            inbound(listen="/run/a.sock"),
            inbound(listen="@name"),
            inbound(listen="@@padded"),
            inbound(streamSettings={"network": "ds", "dsSettings": {"path": "/run/b.sock"}}),
            inbound(streamSettings={"network": "domainsocket",
                                    "dsSettings": {"path": "abs", "abstract": True}}),
            inbound(listen="/run/api.sock", tag="api", protocol="dokodemo-door",
                    settings={"address": "127.0.0.1"}),
            # no stream listener (one process warns and binds nothing): no socket
            inbound(listen="/run/udp.sock", protocol="dokodemo-door",
                    settings={"address": "127.0.0.1", "port": 53, "network": "udp"}),
            inbound(listen="@ss-udp", protocol="shadowsocks",
                    settings={"method": "aes-128-gcm", "password": "p", "network": "udp"}),
            inbound(listen="/run/both.sock", protocol="dokodemo-door",
                    settings={"address": "127.0.0.1", "port": 53, "network": "tcp,udp"}),
        ], "api": {"tag": "api", "services": ["StatsService"]}, "stats": {},
            "routing": {"rules": [{"type": "field", "inboundTag": ["api"],
                                   "outboundTag": "api"}]},
            "outbounds": [{"protocol": "freedom"}]}
        self.assertEqual(unix_listeners(config), [
            "/run/a.sock", "\0name", "\0padded".ljust(108, "\0"), "/run/b.sock", "\0abs",
            "/run/both.sock"])
