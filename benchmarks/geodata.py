"""``python -m benchmarks geodata``: loading geosite/geoip lists, vtwist beside V2Ray 4.34.

Full-size generated data (vtwist.testing.geodata: a geoip.dat over 10 MB, a geosite.dat of
about 150,000 domains) and a typical client config (``geosite:category-ads-all`` blocked,
``geosite:cn`` / ``geoip:private`` / ``geoip:cn`` direct, ``geosite:geolocation-!cn``
proxied). Each implementation starts from the same JSON twice, once without the rules and
once with them, alternated over ``--reps`` runs:

- **ready**: seconds from spawn until the SOCKS inbound accepts (config, data, listen);
  **data load** is ready(with rules) - ready(without), the cost of the lists; **CPU** is the
  process's CPU seconds by then (all threads), steadier than wall time on a busy machine;
- **peak RSS** (VmHWM) and **RSS** (VmRSS, one second after ready); **growth** is the
  difference with and without the rules, the memory the lists cost.

Then, in this process, a routing-decision micro-benchmark: :meth:`Router.route` over a mix of
domains and addresses (in the lists, beside them, in none) against the same rules.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.procs import ProcessGroup, free_port, vtwist_command, wait_port

V2RAY = "/usr/bin/v2ray"
RULES = [
    {"type": "field", "domain": ["geosite:category-ads-all"], "outboundTag": "block"},
    {"type": "field", "domain": ["geosite:cn"], "outboundTag": "direct"},
    {"type": "field", "ip": ["geoip:private", "geoip:cn"], "outboundTag": "direct"},
    {"type": "field", "domain": ["geosite:geolocation-!cn"], "outboundTag": "proxy"},
]


def client_config(port: int, with_rules: bool) -> dict[str, Any]:
    """The typical client config (the proxy outbound is a freedom: nothing is dialled)."""
    return {
        "log": {"loglevel": "warning"},
        "inbounds": [{"tag": "socks", "protocol": "socks", "listen": "127.0.0.1", "port": port,
                      "settings": {"auth": "noauth", "udp": False}}],
        "outbounds": [{"tag": "proxy", "protocol": "freedom"},
                      {"tag": "direct", "protocol": "freedom"},
                      {"tag": "block", "protocol": "blackhole"}],
        "routing": {"domainStrategy": "AsIs", "rules": RULES if with_rules else []},
    }


def ensure_data(directory: Path, scale: float) -> Any:
    """Generate the files once (about 40 s at full size); returns the samples (kept beside
    the files as samples.json)."""
    from vtwist.testing.geodata import Samples, generate

    marker = directory / f"samples-{scale}.json"
    if not marker.exists():
        print(f"generating geo data (scale {scale}) into {directory} ...", flush=True)
        samples = generate(str(directory), scale)
        marker.write_text(json.dumps(dataclasses.asdict(samples)))
    return Samples(**json.loads(marker.read_text()))


def measure_start(group: ProcessGroup, name: str, argv: list[str], port: int,
                  env: dict[str, str]) -> dict[str, float]:
    """Spawn, time until the port accepts, let it settle a second, read its memory."""
    started = time.monotonic()
    proc = group.spawn(name, argv, env)
    try:
        wait_port(port, proc.popen, timeout=120)
        ready = time.monotonic() - started
        time.sleep(1.0)
        return {"ready": ready, "hwm": proc.status_kb("VmHWM") / 1024,
                "rss": proc.status_kb("VmRSS") / 1024, "cpu": proc.cpu_seconds()}
    finally:
        group.stop(proc)


def run_processes(data: Path, reps: int, workdir: Path) -> dict[tuple[str, bool], list[dict]]:
    """Every (implementation, with rules) start, ``reps`` times, alternated."""
    group = ProcessGroup(workdir)
    env = {"V2RAY_LOCATION_ASSET": str(data)}
    results: dict[tuple[str, bool], list[dict[str, float]]] = {}
    try:
        for rep in range(reps):
            for impl in ("vtwist", "v2ray"):
                for with_rules in (False, True):
                    port = free_port()
                    name = f"{impl}-{'rules' if with_rules else 'plain'}-{rep}"
                    path = group.write_config(name, client_config(port, with_rules))
                    argv = vtwist_command(path) if impl == "vtwist" else [V2RAY, "-config", path]
                    figures = measure_start(group, name, argv, port, env)
                    results.setdefault((impl, with_rules), []).append(figures)
                    print(f"  {name}: ready {figures['ready']:.2f} s, CPU {figures['cpu']:.2f} s, "
                          f"peak RSS "
                          f"{figures['hwm']:.1f} MB, RSS {figures['rss']:.1f} MB", flush=True)
    finally:
        group.close()
    return results


def micro(data: Path, samples: Any, count: int) -> dict[str, float]:
    """µs per routing decision in this process, and the in-process load time."""
    from vtwist.config.node import Node
    from vtwist.routing import RouteContext
    from vtwist.routing.geodata.assets import GeoAssets
    from vtwist.routing.parse import parse_routing

    started = time.perf_counter()
    router = parse_routing(Node({"rules": RULES}, "routing"), ["proxy", "direct", "block"],
                           GeoAssets([str(data)]))
    load = time.perf_counter() - started
    rng = random.Random(5)
    hosts: list[str] = []
    for code in ("cn", "geolocation-!cn", "category-ads-all", "geolocation-cn"):
        hosts += samples.domains.get(code, [])
    hosts += [f"www.{h}" for h in hosts[:20]] + samples.other_domains
    for code in ("cn", "us", "private", "jp", "de"):
        hosts += samples.ips.get(code, [])
    hosts += samples.unlisted_ips
    contexts = [RouteContext("tcp", h, 443) for h in hosts]
    picks = [rng.choice(contexts) for _ in range(count)]
    route = router.route
    clock = time.process_time  # CPU time: the machine may be shared
    started = clock()
    for ctx in picks:
        route(ctx)
    per = (clock() - started) / count * 1e6
    # Worst case: a domain in no list walks every rule (and every keyword and regexp).
    misses = [RouteContext("tcp", h, 443) for h in samples.other_domains]
    started = clock()
    for i in range(count):
        route(misses[i % len(misses)])
    miss = (clock() - started) / count * 1e6
    # With the context built per decision (parsing the host), as the dispatcher does.
    started = clock()
    for i in range(count // 4):
        route(RouteContext("tcp", hosts[i % len(hosts)], 443))
    built = (clock() - started) / (count // 4) * 1e6
    return {"load": load, "per": per, "miss": miss, "built": built, "mix": len(hosts)}


def report(results: dict[tuple[str, bool], list[dict[str, float]]]) -> dict[str, dict]:
    """Medians, growth and ratios."""
    out: dict[str, dict[str, float]] = {}
    for impl in ("vtwist", "v2ray"):
        plain, rules = results[(impl, False)], results[(impl, True)]

        def med(runs: list[dict[str, float]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        out[impl] = {
            "ready_plain": med(plain, "ready"), "ready_rules": med(rules, "ready"),
            "hwm_plain": med(plain, "hwm"), "hwm_rules": med(rules, "hwm"),
            "rss_plain": med(plain, "rss"), "rss_rules": med(rules, "rss"),
            "cpu_plain": med(plain, "cpu"), "cpu_rules": med(rules, "cpu"),
        }
        o = out[impl]
        o["load"] = o["ready_rules"] - o["ready_plain"]
        o["load_cpu"] = o["cpu_rules"] - o["cpu_plain"]
        o["hwm_growth"] = o["hwm_rules"] - o["hwm_plain"]
        o["rss_growth"] = o["rss_rules"] - o["rss_plain"]
    print("\n                 ready(plain)  ready(rules)  data load  CPU plain/rules (data)   "
          "peak RSS plain/rules (growth)     RSS plain/rules (growth)")
    for impl, o in out.items():
        print(f"  {impl:8s}   {o['ready_plain']:9.2f} s  {o['ready_rules']:9.2f} s  "
              f"{o['load']:7.2f} s  {o['cpu_plain']:5.2f} / {o['cpu_rules']:5.2f} s "
              f"({o['load_cpu']:+5.2f})   {o['hwm_plain']:6.1f} / {o['hwm_rules']:6.1f} MB "
              f"({o['hwm_growth']:+6.1f})   {o['rss_plain']:6.1f} / {o['rss_rules']:6.1f} MB "
              f"({o['rss_growth']:+6.1f})")
    v, g = out["vtwist"], out["v2ray"]

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b > 0 else "n/a"

    print(f"  vtwist/V2Ray: peak RSS growth {ratio(v['hwm_growth'], g['hwm_growth'])} "
          f"(goal <= 0.5x), RSS growth {ratio(v['rss_growth'], g['rss_growth'])}, "
          f"data load {ratio(v['load'], g['load'])} wall, "
          f"{ratio(v['load_cpu'], g['load_cpu'])} CPU (goal <= 1x)")
    return out


def main(argv: list[str] | None = None) -> int:
    """Generate (once), start both implementations, measure; then the micro-benchmark."""
    p = argparse.ArgumentParser(prog="python -m benchmarks geodata", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="where the generated files live (default: a cache directory under "
                        "the temp dir, generated once)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="small files, one run: a smoke test")
    p.add_argument("--decisions", type=int, default=200_000)
    args = p.parse_args(argv)
    scale = 0.02 if args.quick else 1.0
    reps = 1 if args.quick else args.reps
    data = args.data or Path(tempfile.gettempdir()) / f"vtwist-geodata-{scale}"
    data.mkdir(parents=True, exist_ok=True)
    samples = ensure_data(data, scale)
    sizes = {n: os.path.getsize(data / n) / 1e6 for n in ("geoip.dat", "geosite.dat")}
    print(f"geodata benchmark: geoip.dat {sizes['geoip.dat']:.1f} MB, geosite.dat "
          f"{sizes['geosite.dat']:.1f} MB; {reps} run(s), median; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="vtwist-bench-geodata-"))
    report(run_processes(data, reps, workdir))
    m = micro(data, samples, 20_000 if args.quick else args.decisions)
    print(f"\nrouting decision (CPU time in process, {m['mix']:.0f} destinations mixed): "
          f"{m['per']:.2f} us; a domain in no list: {m['miss']:.2f} us; with the context "
          f"built per decision: {m['built']:.2f} us (goal < 20 us); in-process load of the "
          f"lists {m['load']:.2f} s")
    print(f"load average {os.getloadavg()[0]:.2f} (other work on the machine skews figures)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
