"""The UDP impairment relay as a process: ``python -m benchmarks.relay --listen P --to Q ...``.

Runs :class:`vtwist.testing.udprelay.UDPImpairmentRelay` on its own reactor, so the relay's
CPU never competes inside a proxy process. Loss and one-way delay apply to both directions
(acknowledgements are lost too, like ``netem`` on a link). On SIGTERM it prints its
counters and exits.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> None:
    """Parse options and relay until SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.relay")
    p.add_argument("--listen", type=int, required=True, help="UDP port on 127.0.0.1")
    p.add_argument("--to", type=int, required=True, help="target UDP port on 127.0.0.1")
    p.add_argument("--loss", type=float, default=0.0, help="drop probability 0..1, each way")
    p.add_argument("--delay", type=float, default=0.0, help="one-way delay in seconds")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)

    from twisted.internet import reactor

    from vtwist.testing.udprelay import Impairment, UDPImpairmentRelay

    relay = UDPImpairmentRelay(
        reactor, ("127.0.0.1", args.to),
        upstream=Impairment(loss=args.loss, delay=args.delay),
        downstream=Impairment(loss=args.loss, delay=args.delay),
        seed=args.seed, listen_port=args.listen)
    port = relay.start()
    print(f"relay listening on {port}", flush=True)

    def report() -> None:
        for name, st in relay.stats.items():
            print(f"{name}: received {st.received} sent {st.sent} dropped {st.dropped}",
                  flush=True)

    # The reactor's own SIGTERM handler stops it; the counters are printed on the way out.
    reactor.addSystemEventTrigger("before", "shutdown", report)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
