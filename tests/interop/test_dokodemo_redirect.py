"""dokodemo-door ``followRedirect`` as a transparent proxy, in a network namespace the test
creates (root only).

Inside the namespace (loopback only, nothing leaves it): an echo server, vtwist (``python -m
vtwist run``) with a dokodemo-door whose own ``address`` leads nowhere, and a client bound to
a second loopback source address. An iptables ``REDIRECT`` rule sends the client's connection
to the door; vtwist must read the original destination (``SO_ORIGINAL_DST`` /
``IP6T_SO_ORIGINAL_DST``) and reach the echo server there. The TPROXY variant marks the
client's packets, routes them back in through ``lo`` and lets ``TPROXY`` hand them to a
transparent listener (TCP and UDP).

The tests skip, with the reason, only when the kernel lacks network namespaces or the
netfilter feature; a missing ``ip``/``iptables`` binary is a failure (tools/test.sh installs
iptables).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
ECHO = HERE / "echo_server.py"
DOOR = 10800
ECHO_PORT = 9000
NOWHERE = 1  # the door's own address:port: nothing listens there
SIZE = 4 << 20

CLIENT = r'''
import hashlib, json, os, socket, sys, threading, time
kind, family, src, dst, port, size = sys.argv[1:7]
port, size = int(port), int(size)
fam = socket.AF_INET6 if family == "6" else socket.AF_INET
if kind == "wait":
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection((dst, port), timeout=1).close()
            print(json.dumps({"ok": True})); sys.exit(0)
        except OSError:
            time.sleep(0.1)
    print(json.dumps({"ok": False})); sys.exit(0)
if kind == "tcp":
    payload = os.urandom(size)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(20)
    s.bind((src, 0))
    s.connect((dst, port))
    def send():
        s.sendall(payload); s.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send); t.start()
    h = hashlib.sha256(); got = 0
    while True:
        try:
            chunk = s.recv(1 << 18)
        except OSError:
            break
        if not chunk:
            break
        h.update(chunk); got += len(chunk)
    t.join()
    print(json.dumps({"sent": hashlib.sha256(payload).hexdigest(), "back": h.hexdigest(),
                      "got": got}))
else:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.bind((src, 0))
    results = []
    for i in range(5):
        message = b"datagram %d " % i + os.urandom(500)
        for _ in range(3):
            s.sendto(message, (dst, port))
            try:
                data, addr = s.recvfrom(65535)
            except OSError:
                continue
            results.append([data == message, addr[0], addr[1]])
            break
        else:
            results.append([False, "", 0])
    print(json.dumps({"udp": results}))
'''


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output."""
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60)


class Namespace:
    """A network namespace with loopback up; ``exec`` prefixes a command to run inside."""

    def __init__(self) -> None:
        self.name = "vtw-" + uuid.uuid4().hex[:10]
        made = run("ip", "netns", "add", self.name, check=False)
        if made.returncode != 0:
            raise SkipTest(f"the kernel gives no network namespace: {made.stderr.strip()}")
        run(*self.exec("ip", "link", "set", "lo", "up"))

    def exec(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def sh(self, *args: str, feature: str = "") -> None:
        """Run inside; with ``feature``, a failure means the kernel lacks it: skip."""
        done = run(*self.exec(*args), check=False)
        if done.returncode != 0:
            message = f"{' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}"
            if feature:
                raise SkipTest(f"the kernel lacks {feature} ({message})")
            raise AssertionError(message)

    def delete(self) -> None:
        run("ip", "netns", "delete", self.name, check=False)


class _Redirect(TestCase):
    timeout = 120
    tproxy = "off"

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("needs root (network namespace and iptables)")
        self.ns = Namespace()
        self.addCleanup(self.ns.delete)
        self.tmp = tempfile.mkdtemp(prefix="vtwist-redirect-")
        self.client_script = os.path.join(self.tmp, "client.py")
        Path(self.client_script).write_text(CLIENT)
        # A second loopback source for the client: only its traffic is redirected.
        self.ns.sh("ip", "addr", "add", "127.0.0.2/8", "dev", "lo")
        self.ns.sh("ip", "-6", "addr", "add", "fd00::2/128", "dev", "lo", "nodad")

    def spawn(self, *args: str, ready: bytes | None = None) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.ns.exec(*args), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream:
                    stream.close()

        self.addCleanup(stop)
        if ready is not None:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            self.assertIn(ready, line)
        return proc

    def start(self, network: str = "tcp", extra: dict[str, Any] | None = None) -> None:
        self.spawn(sys.executable, str(ECHO), str(ECHO_PORT), ready=b"ready")
        config: dict[str, Any] = {
            "log": {"loglevel": "info"},
            "inbounds": [{"tag": "door", "listen": "::", "port": DOOR,
                          "protocol": "dokodemo-door",
                          "settings": {"address": "127.0.0.1", "port": NOWHERE,
                                       "network": network, "followRedirect": True}}],
            "outbounds": [{"protocol": "freedom"}]}
        if self.tproxy != "off":
            config["inbounds"][0]["streamSettings"] = {"sockopt": {"tproxy": self.tproxy}}
        config.update(extra or {})
        path = os.path.join(self.tmp, "config.json")
        Path(path).write_text(json.dumps(config))
        self.vtwist = self.spawn(sys.executable, "-m", "vtwist", "run", "--config", path)
        waited = self.client("wait", "4", "127.0.0.1", "127.0.0.1", DOOR, 0)
        if not waited["ok"]:
            self.fail(f"vtwist did not listen:\n{self.output()}")

    def output(self) -> str:
        """vtwist's output so far (after stopping it)."""
        if self.vtwist.poll() is None:
            self.vtwist.terminate()
            try:
                self.vtwist.wait(10)
            except subprocess.TimeoutExpired:
                self.vtwist.kill()
                self.vtwist.wait()
        return self.vtwist.stdout.read().decode(errors="replace")  # type: ignore[union-attr]

    def client(self, kind: str, family: str, src: str, dst: str, port: int,
               size: int) -> dict[str, Any]:
        done = run(*self.ns.exec(sys.executable, self.client_script, kind, family, src, dst,
                                 str(port), str(size)), check=False)
        if done.returncode != 0:
            raise AssertionError(f"client failed: {done.stdout}{done.stderr}")
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    def assertNeverDialsTheDoor(self) -> None:
        """Start vtwist (its readiness probes connect straight to the door), connect
        straight to the door once more and hold the connection until it closes: closed
        without an answer (it went to ``address:port``, nowhere), no connection dialled to
        the door's own address, and the intercepted connection still echoes."""
        self.start()
        result = self.client("tcp", "4", "127.0.0.1", "127.0.0.1", DOOR, 1000)
        self.assertEqual(result["got"], 0)
        self.assertEcho("4", "127.0.0.2", "127.0.0.1")
        output = self.output()
        self.assertNotIn(f"accepted tcp:127.0.0.1:{DOOR} ", output)
        self.assertIn(f"accepted tcp:127.0.0.1:{NOWHERE} ", output)
        self.assertIn(f"accepted tcp:127.0.0.1:{ECHO_PORT} ", output)

    def assertEcho(self, family: str, src: str, dst: str) -> None:
        result = self.client("tcp", family, src, dst, ECHO_PORT, SIZE)
        if (result["got"], result["back"]) != (SIZE, result["sent"]):
            self.fail(f"echo differs: {result}\n{self.output()}")


class RedirectTests(_Redirect):
    """iptables ``-t nat -A OUTPUT ... -j REDIRECT``: SO_ORIGINAL_DST."""

    def redirect(self, tool: str, src: str, dst: str) -> None:
        self.ns.sh(tool, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-s", src, "-d", dst,
                   "--dport", str(ECHO_PORT), "-j", "REDIRECT", "--to-ports", str(DOOR),
                   feature=f"NAT REDIRECT ({tool})")

    def test_ipv4(self) -> None:
        self.redirect("iptables", "127.0.0.2", "127.0.0.1")
        self.start()
        self.assertEcho("4", "127.0.0.2", "127.0.0.1")

    def test_direct_connection_never_dials_the_door(self) -> None:
        """With NAT on, connection tracking answers SO_ORIGINAL_DST for a connection made
        straight to the door too, with the door's own address: following that would dial
        the door, whose new connection would dial it again, without end. Such connections
        go to ``address:port`` instead (here nowhere: closed), and the redirected one
        still reaches its destination."""
        self.redirect("iptables", "127.0.0.2", "127.0.0.1")
        self.assertNeverDialsTheDoor()

    def test_ipv6(self) -> None:
        self.redirect("ip6tables", "fd00::2", "::1")
        self.start()
        self.assertEcho("6", "fd00::2", "::1")

    def test_not_redirected_goes_to_address(self) -> None:
        """A direct connection to the door has no original destination of its own beyond
        the door itself... it goes to the configured address (nothing there: closed)."""
        self.start()
        result = self.client("tcp", "4", "127.0.0.1", "127.0.0.1", DOOR, 1000)
        self.assertEqual(result["got"], 0)


class TProxyTests(_Redirect):
    """``sockopt.tproxy: "tproxy"``: mark the client's packets, route them in through lo,
    ``TPROXY`` to the transparent listener (TCP and UDP)."""

    tproxy = "tproxy"

    def tproxy_rules(self, protocol: str, dst: str = "127.0.0.1") -> None:
        self.ns.sh("ip", "rule", "add", "fwmark", "1", "lookup", "100",
                   feature="policy routing")
        self.ns.sh("ip", "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "100")
        self.ns.sh("iptables", "-t", "mangle", "-A", "OUTPUT", "-p", protocol, "-s",
                   "127.0.0.2", "-d", dst, "--dport", str(ECHO_PORT), "-j", "MARK",
                   "--set-mark", "1", feature="netfilter MARK")
        self.ns.sh("iptables", "-t", "mangle", "-A", "PREROUTING", "-p", protocol, "-s",
                   "127.0.0.2", "-d", dst, "--dport", str(ECHO_PORT), "-j", "TPROXY",
                   "--on-port", str(DOOR), "--on-ip", "127.0.0.1", "--tproxy-mark", "1",
                   feature="netfilter TPROXY")

    def test_tcp(self) -> None:
        self.tproxy_rules("tcp")
        self.start()
        self.assertEcho("4", "127.0.0.2", "127.0.0.1")

    def test_direct_connection_never_dials_the_door(self) -> None:
        """A connection made straight to the transparent door has the door's own address
        as its local address: following it would dial the door, without end. It goes to
        ``address:port`` instead (here nowhere: closed), also when it stays open, and the
        TPROXY'd one still reaches its destination."""
        self.tproxy_rules("tcp")
        self.assertNeverDialsTheDoor()

    def test_udp(self) -> None:
        """The client sends to 10.99.0.9 (not a local address, routed out lo); TPROXY
        brings it to the door, routing by that original destination picks the outbound that
        reaches the echo, and replies come back from 10.99.0.9:ECHO_PORT (a transparent
        socket bound there)."""
        self.ns.sh("ip", "route", "add", "10.99.0.0/24", "dev", "lo")
        self.tproxy_rules("udp", "10.99.0.9")
        self.start("tcp,udp", extra={
            "outbounds": [{"tag": "nowhere", "protocol": "blackhole"},
                          {"tag": "echo", "protocol": "freedom",
                           "settings": {"redirect": f"127.0.0.1:{ECHO_PORT}"}}],
            "routing": {"rules": [{"type": "field", "ip": ["10.99.0.9"],
                                   "outboundTag": "echo"}]}})
        result = self.client("udp", "4", "127.0.0.2", "10.99.0.9", ECHO_PORT, 0)
        if result["udp"] != [[True, "10.99.0.9", ECHO_PORT]] * 5:
            self.fail(f"UDP echo: {result}\n{self.output()}")
