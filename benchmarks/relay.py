"""The UDP impairment relay as a process: ``python -m benchmarks.relay --listen P --to Q ...``.

A small seeded relay (until ``vtwist.testing.udprelay`` lands): every client address gets its own upstream socket (so the
server sees distinct peers, like NAT), each datagram is dropped with probability ``loss``
and otherwise delivered after ``delay`` seconds, in order (a FIFO with one timer per
direction, not one timer per datagram). Runs until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import signal
import sys
from typing import Any


class _Delayed(asyncio.DatagramProtocol):
    """Receives on one socket and hands datagrams to ``forward`` after loss and delay."""

    def __init__(self, relay: Relay, forward: Any) -> None:
        self.relay = relay
        self.forward = forward
        self.queue: collections.deque[tuple[float, bytes, Any]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        relay = self.relay
        relay.packets += 1
        if relay.loss and relay.rng.random() < relay.loss:
            relay.dropped += 1
            return
        if not relay.delay:
            self.forward(data, addr)
            return
        self.queue.append((relay.loop.time() + relay.delay, data, addr))
        if self.timer is None:
            self.timer = relay.loop.call_at(self.queue[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.relay.loop.time()
        queue = self.queue
        while queue and queue[0][0] <= now:
            _, data, addr = queue.popleft()
            self.forward(data, addr)
        if queue:
            self.timer = self.relay.loop.call_at(queue[0][0], self._flush)


class Relay:
    """Client side on ``listen``; one upstream socket per client towards ``to``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, to: tuple[str, int], loss: float,
                 delay: float, seed: int) -> None:
        self.loop = loop
        self.to = to
        self.loss = loss
        self.delay = delay
        self.rng = random.Random(seed)
        self.packets = 0
        self.dropped = 0
        self.front: _Delayed | None = None
        self.upstreams: dict[Any, _Delayed] = {}
        self.pending: dict[Any, list[bytes]] = {}

    async def start(self, listen: int) -> None:
        """Bind the client-facing socket."""
        _, self.front = await self.loop.create_datagram_endpoint(
            lambda: _Delayed(self, self._to_server), local_addr=("127.0.0.1", listen))

    def _to_server(self, data: bytes, client: Any) -> None:
        up = self.upstreams.get(client)
        if up is not None and up.transport is not None:
            up.transport.sendto(data, self.to)
            return
        if client in self.pending:
            self.pending[client].append(data)
            return
        self.pending[client] = [data]
        self.loop.create_task(self._open_upstream(client))

    async def _open_upstream(self, client: Any) -> None:
        front = self.front
        assert front is not None

        def back(data: bytes, _addr: Any) -> None:
            if front.transport is not None:
                front.transport.sendto(data, client)

        _, up = await self.loop.create_datagram_endpoint(
            lambda: _Delayed(self, back), local_addr=("127.0.0.1", 0))
        self.upstreams[client] = up
        for data in self.pending.pop(client, []):
            up.transport.sendto(data, self.to)  # type: ignore[union-attr]


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    relay = Relay(loop, ("127.0.0.1", args.to), args.loss, args.delay, args.seed)
    await relay.start(args.listen)
    done = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: done.done() or done.set_result(None))
    await done
    print(f"packets {relay.packets} dropped {relay.dropped}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Parse options and relay until SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.relay")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--to", type=int, required=True)
    p.add_argument("--loss", type=float, default=0.0, help="drop probability 0..1")
    p.add_argument("--delay", type=float, default=0.0, help="one-way delay in seconds")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main(sys.argv[1:])
