"""Descriptor exhaustion: an echo server under a low RLIMIT_NOFILE (a subprocess) keeps its
listener, keeps serving its established connections, does not spin, logs once per interval,
and accepts the clients waiting in the backlog once descriptors free up."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase, TestCase

ROOT = Path(__file__).resolve().parent.parent

SERVER = r"""
import os, resource, sys
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import globalLogBeginner, textFileLogObserver
from vtwist.transport.tcp.listen import TCPServerEndpoint

class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
used = len(os.listdir("/proc/self/fd"))
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (used + int(sys.argv[1]), hard))

def listening(port):
    print(port.getHost().port, flush=True)

TCPServerEndpoint(reactor, 0, "127.0.0.1").listen(Factory.forProtocol(Echo)).addCallback(
    listening)
reactor.run()
"""

#: descriptors the server may open beyond those it has at start (the listener is one)
SPARE = 12
CLIENTS = 40


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def echoes(sock: socket.socket, payload: bytes, timeout: float, send: bool = True) -> bool:
    """Whether ``payload`` (sent now unless ``send`` is false) comes back on ``sock`` within
    ``timeout``."""
    sock.settimeout(timeout)
    got = b""
    try:
        if send:
            sock.sendall(payload)
        while len(got) < len(payload):
            chunk = sock.recv(len(payload) - len(got))
            if not chunk:
                return False
            got += chunk
    except (TimeoutError, OSError):
        return False
    return got == payload


class DescriptorExhaustionTests(SynchronousTestCase):
    """A real process under a low descriptor limit."""

    def setUp(self) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="fdlog-", delete=False)
        self.addCleanup(os.unlink, self.log.name)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(SPARE)], cwd=ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=self.log)
        self.addCleanup(self._stop)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else b""  # type: ignore[union-attr]
        self.assertTrue(line.strip().isdigit(), f"server did not start: {line!r}")
        self.port = int(line)
        self.clients: list[socket.socket] = []

    def _stop(self) -> None:
        for sock in self.clients:
            sock.close()
        self.proc.kill()
        self.proc.wait()

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.clients.append(sock)
        return sock

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_for(self, what: str, predicate, timeout: float = 20.0) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}")
            time.sleep(0.05)

    def test_exhaustion_and_recovery(self) -> None:
        first = self.connect()
        self.assertTrue(echoes(first, b"ping", 5), self.log_text())
        waiting = [self.connect() for _ in range(CLIENTS)]
        for i, sock in enumerate(waiting):
            sock.sendall(b"%03d" % i)
        self.wait_for("the exhaustion warning", lambda: "cannot accept" in self.log_text())
        time.sleep(1.0)  # what was accepted has echoed by now
        readable, _, _ = select.select(waiting, [], [], 1.0)
        accepted = [s for s in waiting if s in readable
                    and echoes(s, b"%03d" % waiting.index(s), 1, False)]
        pending = [s for s in waiting if s not in accepted]
        self.assertTrue(accepted and pending, (len(accepted), len(pending)))
        self.assertLess(len(accepted), SPARE)

        # out of descriptors: the established connections still flow, quickly
        started = time.monotonic()
        self.assertTrue(echoes(first, b"still here", 5))
        self.assertTrue(echoes(accepted[0], b"me too", 5))
        self.assertLess(time.monotonic() - started, 2.0)
        # no busy loop: little CPU over two seconds of exhaustion
        cpu = cpu_seconds(self.proc.pid)
        time.sleep(2.0)
        self.assertLess(cpu_seconds(self.proc.pid) - cpu, 0.5)
        # one warning per interval, not one per attempt
        self.assertEqual(self.log_text().count("cannot accept"), 1, self.log_text())
        self.assertNotIn("Traceback", self.log_text())

        # free descriptors: the clients waiting in the backlog are accepted, their bytes echo
        for sock in accepted:
            sock.close()
            self.clients.remove(sock)
        still_pending = list(pending)
        for sock in pending[:len(accepted)]:
            self.assertTrue(echoes(sock, b"%03d" % waiting.index(sock), 10, False))
            still_pending.remove(sock)
        self.wait_for("the recovery line", lambda: "accepting connections again" in
                      self.log_text())
        self.assertTrue(echoes(first, b"end", 5))
        self.assertEqual(self.proc.poll(), None)


class AdoptTests(TestCase):
    """``adopt_backoff_port`` listens on an existing socket (what ``--workers`` binds with
    SO_REUSEPORT) with the same exhaustion handling."""

    async def test_adopt(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
        from twisted.internet.protocol import Factory, Protocol

        from vtwist.transport.internals import AcceptBackoffPort, adopt_backoff_port

        accepted: list[Protocol] = []

        class Note(Protocol):
            def connectionMade(self) -> None:
                accepted.append(self)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        sock.setblocking(False)
        port = adopt_backoff_port(reactor, sock.fileno(), sock.family, Factory.forProtocol(Note))
        sock.close()
        self.addCleanup(port.stopListening)
        self.assertIsInstance(port, AcceptBackoffPort)
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), Protocol())
        client.transport.loseConnection()
        from tests.netutil import wait_until
        await wait_until(lambda: bool(accepted), "the adopted port to accept", timeout=10)
