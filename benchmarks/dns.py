"""``python -m benchmarks.dns``: the ``dns`` outbound, vtwist beside V2Ray 4.34.

Both run the same config: a dokodemo-door (UDP) whose traffic goes to the ``dns`` outbound,
a ``dns`` section whose one server is a local twisted.names server (a child process,
``python -m benchmarks.dns --serve PORT``, answering ``nameN.bench`` A and TXT). The load
generator (threads with blocking UDP sockets, one query outstanding each, in this process)
measures for each metric, alternated over ``--reps`` runs:

- **A cached**: A queries for 200 names, answered by the internal DNS (after the first
  round, from its cache): queries/s;
- **TXT forwarded**: TXT queries, which the outbound forwards to the server: queries/s;

and prints the ratio vtwist/V2Ray, CPU seconds per 10,000 queries and peak RSS.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.procs import ProcessGroup, free_port, vtwist_command, wait_udp_bound

V2RAY = "/usr/bin/v2ray"
NAMES = 200


def serve(port: int) -> None:
    """The upstream server: ``nameN.bench`` -> 10.N/16 (A) and a TXT record."""
    from twisted.internet import defer, reactor
    from twisted.names import dns, error, server

    class Zone:
        def query(self, query: Any, timeout: Any = None) -> Any:
            name = query.name.name
            if not name.endswith(b".bench"):
                return defer.fail(error.DomainError())
            if query.type == dns.TXT:
                record: Any = dns.Record_TXT(b"benchmark text", ttl=300)
            elif query.type == dns.A:
                n = sum(name) % 65536
                record = dns.Record_A(f"10.{n >> 8}.{n & 255}.1", ttl=300)
            else:
                return defer.succeed(([], [], []))
            return defer.succeed(([dns.RRHeader(name, query.type, ttl=300, payload=record)],
                                  [], []))

    factory = server.DNSServerFactory(clients=[Zone()])
    reactor.listenUDP(port, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
    reactor.run()


def query_bytes(name: str, qtype: int, query_id: int) -> bytes:
    """A raw DNS query (no library: the generator stays cheap)."""
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0) + qname + struct.pack(
        "!HH", qtype, 1)


def generate(port: int, qtype: int, seconds: float, threads: int = 4) -> tuple[int, int]:
    """Queries answered and lost in ``seconds`` with ``threads`` one-at-a-time senders."""
    stop = time.monotonic() + seconds
    counts = [[0, 0] for _ in range(threads)]

    def worker(slot: list[int], seed: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(1.0)
            i = seed
            while time.monotonic() < stop:
                i += 1
                query_id = i & 0xFFFF
                s.sendto(query_bytes(f"name{i % NAMES}.bench", qtype, query_id),
                         ("127.0.0.1", port))
                try:
                    while True:
                        reply = s.recv(4096)
                        if reply[:2] == struct.pack("!H", query_id):
                            slot[0] += 1
                            break
                except TimeoutError:
                    slot[1] += 1

    workers = [threading.Thread(target=worker, args=(counts[i], i * 10007))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def config(door: int, upstream: int) -> dict[str, Any]:
    """The same JSON for both implementations."""
    return {
        "log": {"loglevel": "warning"},
        "dns": {"servers": [{"address": "127.0.0.1", "port": upstream}], "tag": "dns-in"},
        "inbounds": [{"protocol": "dokodemo-door", "listen": "127.0.0.1", "port": door,
                      "settings": {"address": "127.0.0.1", "port": upstream,
                                   "network": "udp"}}],
        "outbounds": [{"tag": "dns-out", "protocol": "dns"},
                      {"tag": "direct", "protocol": "freedom"}],
        "routing": {"rules": [{"type": "field", "inboundTag": ["dns-in"],
                               "outboundTag": "direct"}]},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one line per metric and implementation."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.dns", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--quick", action="store_true", help="one short run each")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.quick:
        args.reps, args.seconds = 1, 1.0
    workdir = Path(tempfile.mkdtemp(prefix="vtwist-bench-dns-"))
    group = ProcessGroup(workdir)
    try:
        upstream = free_port(socket.SOCK_DGRAM)
        group.spawn("upstream", [sys.executable, "-m", "benchmarks.dns", "--serve",
                                 str(upstream)])
        wait_udp_bound(upstream)
        procs = {}
        for name in ("vtwist", "v2ray"):
            door = free_port(socket.SOCK_DGRAM)
            path = group.write_config(name, config(door, upstream))
            argv = vtwist_command(path) if name == "vtwist" else [V2RAY, "-config", path]
            procs[name] = (group.spawn(name, argv), door)
            wait_udp_bound(door, procs[name][0].popen)
            generate(door, 1, 0.5)  # warm: the cache holds every name
        print(f"load average {os.getloadavg()[0]:.2f}; {args.reps} runs of {args.seconds:g} s, "
              "4 senders, one query outstanding each")
        for metric, qtype in (("A cached", 1), ("TXT forwarded", 16)):
            rates: dict[str, list[float]] = {n: [] for n in procs}
            cpu: dict[str, list[float]] = {n: [] for n in procs}
            lost: dict[str, int] = {n: 0 for n in procs}
            for proc, _ in procs.values():
                proc.reset_peak_rss()
            for _ in range(args.reps):
                for name, (proc, door) in procs.items():
                    before = proc.cpu_seconds()
                    answered, missing = generate(door, qtype, args.seconds)
                    rates[name].append(answered / args.seconds)
                    cpu[name].append((proc.cpu_seconds() - before) / max(answered, 1) * 1e4)
                    lost[name] += missing
            medians = {n: statistics.median(r) for n, r in rates.items()}
            for name, (proc, _) in procs.items():
                print(f"{metric:14} {name:7} {medians[name]:8.0f} q/s  "
                      f"cpu {statistics.median(cpu[name]):5.2f} s/10k q  "
                      f"peak RSS {proc.status_kb('VmHWM') / 1024:6.1f} MB  lost {lost[name]}")
            print(f"{metric:14} ratio vtwist/v2ray {medians['vtwist'] / medians['v2ray']:.2f}")
        print(f"load average {os.getloadavg()[0]:.2f}")
    finally:
        group.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
