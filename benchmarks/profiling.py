"""Summaries of py-spy ``--format raw`` profiles (collapsed stacks: ``f1;f2;f3 COUNT``).

Only the main thread's samples count (stacks that start at the interpreter's entry), and a
sample whose innermost frame is the reactor's ``epoll_wait`` is idle, not work; resolver or
thread-pool threads are reported as a total. Percentages are of the busy main-thread samples.
``python -m benchmarks.profiling FILE...`` prints the summary of saved profiles.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::-?\d+)?\)$")
_IDLE = ("EPollReactor.doPoll", "PollReactor.doPoll", "SelectReactor.doSelect",
         "lean_poll.<locals>.doPoll")
_PLUMBING = ("<frozen runpy>", "runner.py:run_config", "cli.py:", "vtwist/__main__.py",
             "ReactorBase.run", "ReactorBase.mainLoop", "log.py:callWithLogger",
             "log.py:callWithContext", "context.py:", "_PollLikeMixin._doReadOrWrite", "doPoll")


def start_spy(pid: int, out: Path, rate: int) -> subprocess.Popen[bytes]:
    """``py-spy record`` of process ``pid`` (raw collapsed stacks) into ``out``."""
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--format", "raw",
                             "--rate", str(rate), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_spies(spies: list[subprocess.Popen[bytes]], wait: float = 30) -> None:
    """SIGINT every spy (py-spy then writes its file); kill one that takes over ``wait`` s."""
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(wait)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(5)


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``dir/file.py:func``."""
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    func, path = m.groups()
    return "/".join(path.split("/")[-2:]) + ":" + func


def summarize(path: Path, top: int = 30) -> str:
    """Self and inclusive time per function of the main thread's busy samples, as text."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = other = 0
    for line in path.read_text("utf-8", "replace").splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        frames = [_short(f) for f in m.group(1).split(";")
                  if not f.startswith(("process ", "thread "))]
        count = int(m.group(2))
        if not frames:
            continue
        if not frames[0].endswith("_run_module_as_main") and "<module>" not in frames[0]:
            other += count
            continue
        if frames[-1].endswith(_IDLE):
            idle += count
            continue
        busy += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    if not busy:
        return f"{path.name}: no busy samples\n"
    out = [f"{path.name}: main thread busy {busy} samples, idle in the poller {idle}, "
           f"other threads {other}", "", "self time:"]
    out += [f"  {100 * c / busy:5.1f}%  {f}" for f, c in own.most_common(top)]
    out += ["", "inclusive time (reactor plumbing left out):"]
    shown = [(f, c) for f, c in inclusive.most_common() if not any(p in f for p in _PLUMBING)]
    out += [f"  {100 * c / busy:5.1f}%  {f}" for f, c in shown[:top]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(summarize(Path(arg)))
