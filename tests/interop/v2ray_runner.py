"""Child processes for the interop tests: the real ``v2ray`` and the subprocess echo server.

Every child is killed on ``stop()``, at interpreter exit, and when the test process dies.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.netutil import free_port, wait_for_port, wait_for_port_async, wait_until

V2RAY = shutil.which("v2ray") or "/usr/bin/v2ray"
HERE = Path(__file__).resolve().parent


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_RUNNING: list[Subprocess] = []


@atexit.register
def _stop_all() -> None:
    for child in list(_RUNNING):
        child.stop()


def read_child_log(log: Any) -> str:
    """Everything in ``log`` (a file a child process writes to) so far, read with ``pread``:
    the child shares the file's offset, so a seek here would make its next line overwrite
    the start of the file."""
    fd = log.fileno()
    return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")


class Subprocess:
    """A child process killed on :meth:`stop`, at exit, or when this process dies."""

    def __init__(self, args: list[str], **kw: Any) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, preexec_fn=_die_with_parent,
                                     **kw)
        _RUNNING.append(self)

    def check_alive(self) -> None:
        """Raise if the child has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"child exited with {self.proc.returncode}: {self.proc.args}")

    def stop(self) -> None:
        """Kill and reap."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class V2Ray(Subprocess):
    """``v2ray -config FILE`` with ``config`` written to a temp directory.

    Blocks until each of ``wait_ports`` accepts TCP; the async waits serve reactor tests.
    """

    def __init__(self, config: dict[str, Any], wait_ports: Sequence[int] = ()) -> None:
        if not os.path.exists(V2RAY):
            raise AssertionError(f"v2ray binary not found at {V2RAY}; install V2Ray 4.34")
        self.dir = tempfile.mkdtemp(prefix="vtwist-v2ray-")
        path = os.path.join(self.dir, "config.json")
        with open(path, "w") as f:
            json.dump(config, f)
        self.log = open(os.path.join(self.dir, "v2ray.log"), "w+b")  # noqa: SIM115
        super().__init__([V2RAY, "-config", path], stdout=self.log, stderr=subprocess.STDOUT)
        try:
            for port in wait_ports:
                wait_for_port(port, timeout=10, alive=self.check_alive)
        except BaseException:
            self.stop()  # the caller never gets the object to clean up
            raise

    def output(self) -> str:
        """What v2ray printed so far."""
        return read_child_log(self.log)

    def check_alive(self) -> None:
        """Raise, with its output, if v2ray has exited."""
        if self.proc.poll() is not None:
            raise AssertionError(f"v2ray exited early:\n{self.output()}")

    async def wait_port(self, port: int, timeout: float = 10.0) -> None:
        """Wait, reactor running, until something accepts on 127.0.0.1:``port``."""
        await wait_for_port_async(port, timeout, alive=self.check_alive)

    async def wait_started(self, timeout: float = 10.0) -> None:
        """Wait, reactor running, until v2ray logged that it started."""
        await wait_until(lambda: "started" in self.output(),
                         lambda: f"v2ray did not start:\n{self.output()}", timeout,
                         self.check_alive)

    def stop(self) -> None:
        """Kill v2ray and remove its files."""
        super().stop()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class EchoServer(Subprocess):
    """tests/interop/echo_server.py on a free port (TCP and UDP, IPv4 and IPv6)."""

    def __init__(self) -> None:
        self.port = free_port(udp_too=True, ipv6_too=True)
        super().__init__([sys.executable, str(HERE / "echo_server.py"), str(self.port)],
                         stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if b"ready" not in line:
            self.stop()
            raise AssertionError("echo server did not start")
