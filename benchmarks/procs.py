"""Child processes for benchmarks: start, wait for a port, measure (RSS, CPU), always kill.

Every process started through :class:`ProcessGroup` is killed when the group closes, which
the runner does in a ``finally`` block, so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """An ephemeral port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None,
              timeout: float = 20.0) -> None:
    """Block until 127.0.0.1:``port`` accepts a TCP connection (bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def wait_udp_bound(port: int, proc: subprocess.Popen[bytes] | None = None,
                   timeout: float = 20.0) -> None:
    """Block until something has bound UDP 127.0.0.1:``port`` (bounded by ``timeout``).

    A UDP server cannot be polled like a TCP one; binding the port ourselves fails once the
    server holds it. Clients started earlier would meet ICMP port unreachable.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before binding")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing bound UDP 127.0.0.1:{port} after {timeout:.0f} s")


def vtwist_command(config_path: str, workers: int = 1) -> list[str]:
    """How to run vtwist on a config file: ``python -m vtwist run --config FILE`` (with
    ``--workers N`` when more than one)."""
    extra = ["--workers", str(workers)] if workers > 1 else []
    return [sys.executable, "-m", "vtwist", "run", "--config", config_path, *extra]


def descendants(pid: int) -> list[int]:
    """The running child processes of ``pid``, theirs, and so on (``--workers``)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            kids = [int(k) for k in
                    Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (OSError, ValueError):
            continue
        found += kids
        todo += kids
    return found


def wait_listeners(port: int, count: int, proc: subprocess.Popen[bytes] | None = None,
                   timeout: float = 60.0) -> None:
    """Block until ``count`` sockets listen on TCP 127.0.0.1:``port`` (every worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode}")
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
        listening = sum(1 for row in rows if row.split()[3] == "0A"
                        and int(row.split()[1].split(":")[1], 16) == port)
        if listening >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"fewer than {count} listeners on 127.0.0.1:{port} after "
                       f"{timeout:.0f} s")


class Proc:
    """One child process with its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=str(log_path.parent),
                                      env=full_env, start_new_session=True)

    @property
    def pid(self) -> int:
        """The process id."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def log_tail(self, n: int = 15) -> str:
        """The last ``n`` lines of the process's output (for error messages)."""
        try:
            lines = self.log_path.read_text("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def cpu_seconds(self) -> float:
        """utime + stime of the process and its running children (``--workers``) so far
        (from /proc/PID/stat)."""
        total = 0.0
        for pid in [self.pid, *descendants(self.pid)]:
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                if pid == self.pid:
                    return float("nan")
                continue
            fields = text[text.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def status_kb(self, key: str) -> int:
        """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS), 0 when unreadable; with
        workers, the largest of the process's and its children's (a per-process figure)."""
        best = 0
        for pid in [self.pid, *descendants(self.pid)]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(key + ":"):
                        best = max(best, int(line.split()[1]))
            except OSError:
                pass
        return best

    def reset_peak_rss(self) -> bool:
        """Reset VmHWM to the current RSS (``clear_refs`` 5); False when not allowed."""
        try:
            for pid in [self.pid, *descendants(self.pid)]:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 3 s; the whole process group."""
        if self.popen.poll() is None:
            for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
                try:
                    os.killpg(self.popen.pid, sig)
                except OSError:
                    pass
                try:
                    self.popen.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()


class ProcessGroup:
    """Owns every child of a benchmark run; :meth:`close` kills them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start ``argv`` with its output in ``workdir/name.log``."""
        proc = Proc(name, argv, self.workdir / f"{name}.log", env)
        self.procs.append(proc)
        return proc

    def write_config(self, name: str, config: dict[str, Any]) -> str:
        """Write a JSON config into the work directory; returns its path."""
        path = self.workdir / f"{name}.json"
        path.write_text(json.dumps(config, indent=1))
        return str(path)

    def stop(self, proc: Proc) -> None:
        """Stop one process now."""
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        """Kill every process still running."""
        while self.procs:
            self.procs.pop().stop()
