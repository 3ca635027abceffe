"""Running a comparison: start the setups, alternate runs (A B A B), report medians and ratios.

A :class:`Group` is one comparison (for example "SOCKS5 -> freedom" with vtwist, pproxy and
V2Ray). For every :class:`Metric`, each repetition runs the metric once on every setup in
turn, so slow drifts of a noisy machine hit all setups alike; the median is reported, with
the ratio of the first setup (vtwist) to each other one. Peak RSS (VmHWM, reset before every
run) and CPU seconds (utime+stime) of every proxy process are recorded as well.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.loadgen import Target, connect_rate, echo_latency, transfer
from benchmarks.procs import ProcessGroup
from benchmarks.setups import Setup

MB = 1_000_000


@dataclass
class Output:
    """A further figure one metric run yields (for example p99 beside p50)."""

    key: str
    label: str
    unit: str
    higher_better: bool = True


@dataclass
class Outcome:
    """What a metric run may return instead of a bare float: more figures and a note."""

    value: float
    extra: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Metric:
    """One measurement. ``run`` returns the value (or an :class:`Outcome` with the ``also``
    figures); ``moved`` is the bytes one run moves (for CPU seconds per MB)."""

    key: str
    label: str
    unit: str
    run: Callable[[Target], float | Outcome]
    higher_better: bool = True
    moved: int = 0
    also: list[Output] = field(default_factory=list)


@dataclass
class Context:
    """Options of this run and the shared sink."""

    workdir: Path
    sink_port: int
    reps: int
    quick: bool
    verify: bool
    profile_dir: Path | None = None
    verbose: bool = False
    #: a vtwist source tree (an older commit) to run beside the current one
    baseline: Path | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    out: Any = sys.stdout

    def say(self, text: str = "") -> None:
        """Print a line at once."""
        print(text, file=self.out, flush=True)


@dataclass
class Group:
    """Setups compared on the same metrics; the first setup is the subject of the ratios."""

    suite: str
    title: str
    setups: list[Setup]
    metrics: list[Metric]
    notes: list[str] = field(default_factory=list)


def baseline(ctx: Context, build: Callable[[dict[str, str]], Setup]) -> list[Setup]:
    """The baseline vtwist setup (``--baseline DIR``), or nothing."""
    if ctx.baseline is None:
        return []
    return [build({"PYTHONPATH": str(ctx.baseline)})]


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def warm_up(setup: Setup, target: Target, timeout: float = 20.0) -> None:
    """A few echoes through the setup, retried until it answers (bounded)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            echo_latency(target, 5, warmup=0)
            return
        except (OSError, ValueError) as e:
            last = e
            if any(not p.alive() for p in setup.procs):
                break
            time.sleep(0.2)
    raise RuntimeError(f"no echo through {setup.name}: {last}")


class _Profiler:
    """py-spy record (raw collapsed stacks) on the vtwist processes of a group."""

    def __init__(self, directory: Path, group: Group) -> None:
        from benchmarks.profiling import start_spy

        self.runs: list[tuple[subprocess.Popen[bytes], Path]] = []
        directory.mkdir(parents=True, exist_ok=True)
        for setup in group.setups:
            if setup.family != "vtwist" or setup.error:
                continue
            for proc in setup.procs:
                out = directory / f"{group.suite}-{proc.name}.txt"
                self.runs.append((start_spy(proc.pid, out, 250), out))

    def stop(self) -> list[Path]:
        """Stop recording; the profiles that were written."""
        from benchmarks.profiling import stop_spies

        stop_spies([popen for popen, _ in self.runs], 15)
        return [out for _, out in self.runs if out.exists()]


def run_group(ctx: Context, group: Group) -> None:
    """Start the group's setups, run every metric A B A B, print and record the medians."""
    ctx.say(f"\n== {group.suite}: {group.title}")
    for note in group.notes:
        ctx.say(f"   {note}")
    procs = ProcessGroup(ctx.workdir)
    profiler: _Profiler | None = None
    try:
        live: list[Setup] = []
        for setup in group.setups:
            try:
                setup.start(procs)
                warm_up(setup, Target(setup.socks_port, ctx.sink_port, entry=setup.entry))
                live.append(setup)
            except Exception as e:  # noqa: BLE001 - one broken setup must not stop the rest
                setup.error = f"{type(e).__name__}: {e}"
                ctx.say(f"   ! {setup.name} unavailable: {setup.error}")
                tail = setup.describe_failure()
                if tail.strip():
                    ctx.say("     " + tail.replace("\n", "\n     "))
        if ctx.profile_dir is not None:
            profiler = _Profiler(ctx.profile_dir, group)
        names = [s.name for s in group.setups]
        header = f"{'metric':42}" + "".join(f" {n:>12}" for n in names) + "".join(
            f"{names[0] + '/' + n:>20}" for n in names[1:])
        ctx.say(header)
        peaks: dict[str, int] = {}
        for metric in group.metrics:
            _run_metric(ctx, group, live, metric, peaks)
        _report_resources(ctx, group, peaks)
    finally:
        if profiler is not None:
            for path in profiler.stop():
                from benchmarks.profiling import summarize

                summary = summarize(path)
                summary_path = path.with_suffix(".summary.txt")
                summary_path.write_text(summary)
                ctx.say(f"   profile: {path} (summary {summary_path})")
        procs.close()


def _run_metric(ctx: Context, group: Group, live: list[Setup], metric: Metric,
                peaks: dict[str, int]) -> None:
    """Run ``metric`` A B A B on the live setups; print and record each output's medians."""
    names = [s.name for s in group.setups]
    subject = names[0]
    outputs = [Output(metric.key, metric.label, metric.unit, metric.higher_better),
               *metric.also]
    values: dict[str, dict[str, list[float]]] = {o.key: {n: [] for n in names} for o in outputs}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    errors: dict[str, str] = {}
    notes: dict[str, list[str]] = {n: [] for n in names}
    for _rep in range(ctx.reps):
        for setup in live:
            if setup.name in errors:
                continue
            for p in setup.procs:
                p.reset_peak_rss()
            cpu0 = sum(p.cpu_seconds() for p in setup.procs)
            try:
                outcome = metric.run(Target(setup.socks_port, ctx.sink_port, entry=setup.entry))
            except Exception as e:  # noqa: BLE001 - recorded, shown as n/a
                errors[setup.name] = f"{type(e).__name__}: {e}"
                if ctx.verbose:
                    traceback.print_exc()
                continue
            cpu[setup.name].append(sum(p.cpu_seconds() for p in setup.procs) - cpu0)
            if not isinstance(outcome, Outcome):
                outcome = Outcome(outcome)
            values[metric.key][setup.name].append(outcome.value)
            for key, value in outcome.extra.items():
                values[key][setup.name].append(value)
            if outcome.note:
                notes[setup.name].append(outcome.note)
            for p in setup.procs:
                key = f"{setup.name}:{p.name}"
                peaks[key] = max(peaks.get(key, 0), p.status_kb("VmHWM"))
    for out in outputs:
        vals = values[out.key]
        medians = {n: (statistics.median(v) if v else None) for n, v in vals.items()}
        ratios = {}
        for n in names[1:]:
            a, b = medians[subject], medians[n]
            ratios[n] = (a / b) if a and b else None
        ctx.say(f"{out.label + ' (' + out.unit + ')':42}"
                + "".join(f"{_fmt(medians[n]):>13}" for n in names)
                + "".join(f"{_fmt(ratios[n]):>20}" for n in names[1:]))
        cpu_per_mb = {}
        if metric.moved and out.key == metric.key:
            cpu_per_mb = {n: statistics.median(c) / (metric.moved / MB) if c else None
                          for n, c in cpu.items()}
        ctx.results.append({
            "suite": group.suite, "group": group.title, "metric": out.key,
            "label": out.label, "unit": out.unit, "higher_better": out.higher_better,
            "values": vals, "median": medians,
            "ratio": {f"{subject}/{n}": r for n, r in ratios.items()},
            "cpu_s": cpu if out.key == metric.key else {}, "cpu_s_per_MB": cpu_per_mb,
            "errors": errors, "notes": notes,
        })
    for n, err in errors.items():
        ctx.say(f"   ! {n}: {err}")
    for n, found in notes.items():
        for note in sorted(set(found)):
            ctx.say(f"   note {n}: {note}")


def _per_gb(per_mb: float | None) -> float | None:
    return None if per_mb is None else per_mb * 1000


def measure_ceiling(ctx: Context, total: int, conns: int) -> None:
    """The load generator straight to the sink (no proxy): what it can drive at most."""
    target = Target(0, ctx.sink_port, direct=True)
    parts = []
    for label, metric in (
            ("upload 1 stream", lambda: total / MB / transfer(target, "up", total, 1)),
            ("download 1 stream", lambda: total / MB / transfer(target, "down", total, 1)),
            ("download 16 streams", lambda: total / MB / transfer(target, "down", total, 16))):
        parts.append(f"{label} {_fmt(statistics.median(metric() for _ in range(3)))} MB/s")
    parts.append(f"{_fmt(connect_rate(target, conns)[0])} conn/s")
    ctx.say("load generator ceiling (direct to the sink, no proxy): " + ", ".join(parts))
    ctx.results.append({"suite": "ceiling", "metric": "ceiling", "text": parts})


def _report_resources(ctx: Context, group: Group, peaks: dict[str, int]) -> None:
    """CPU per MB of the transfer metrics, and each process's peak RSS."""
    moved = [r for r in ctx.results if r.get("group") == group.title and r.get("cpu_s_per_MB")
                and r["suite"] == group.suite]
    if moved:
        names = [s.name for s in group.setups]
        ctx.say("CPU seconds per GB (all proxy processes of a setup, median run):")
        for r in moved:
            ctx.say(f"  {r['label']:40}" + "".join(
                f"{_fmt(_per_gb(r['cpu_s_per_MB'][n])):>13}"
                for n in names))
    if peaks:
        ctx.say("peak RSS, MB (VmHWM, max over the runs): " + ", ".join(
            f"{k} {v / 1024:.1f}" for k, v in sorted(peaks.items())))
        ctx.results.append({"suite": group.suite, "group": group.title, "metric": "peak_rss_kb",
                            "peaks": peaks})
