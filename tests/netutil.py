"""Small helpers for tests that use real loopback sockets: free ports and port waits.

Echo and collector protocols live in :mod:`vtwist.testing.doubles`."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import Any


def _bindable(family: int, kind: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family, kind) as s:
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
    except OSError:
        return False
    return True


#: Ports handed out lately by :func:`free_port` in this process (not handed out again soon).
_GIVEN: list[int] = []
_random = random.Random()


def _quiet_ports() -> range:
    """Ports the kernel never picks for an outgoing connection: below the ephemeral range
    (``ip_local_port_range``), above 20000 (clear of most services)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(20000, low) if low > 21000 else range(0)


def free_port(udp_too: bool = False, host: str = "127.0.0.1", ipv6_too: bool = False) -> int:
    """A port that is free for TCP (and for UDP too when asked) on ``host`` right now.

    With ``ipv6_too`` the port is also free on ``::1`` (for servers bound on both).

    The port comes from below the ephemeral range: a port the kernel gave out (``bind`` to
    port 0) is one it may give next to any outgoing connection, of this process or another
    test process, before the test binds it ("Address already in use" under ``-j2``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp_too else [])
    places = [(family, host)] + ([(socket.AF_INET6, "::1")] if ipv6_too else [])
    quiet = _quiet_ports()
    for attempt in range(200):
        if quiet and attempt < 150:
            port = _random.choice(quiet)
            if port in _GIVEN:
                continue
        else:  # no quiet range here (or none free): a port of the kernel's choosing
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        if all(_bindable(fam, kind, where, port)
               for fam, where in places for kind in kinds):
            _GIVEN.append(port)
            del _GIVEN[:-2000]
            return port
    raise RuntimeError("no free port found")


def silent_port(test: Any) -> int:
    """A loopback port whose accept queue is full, so later SYNs go unanswered (a target
    that never answers a connect); its sockets close in ``test``'s cleanup."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    test.addCleanup(silent.close)
    filler = socket.socket()
    test.addCleanup(filler.close)
    filler.connect(silent.getsockname())  # fills the queue
    return int(silent.getsockname()[1])


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def wait_for_port(port: int, timeout: float = 20, host: str = "127.0.0.1",
                  alive: Callable[[], None] | None = None) -> None:
    """Block until something accepts TCP connections on ``host:port``.

    ``alive`` is called between tries; it raises if the server being waited for died.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        if accepts(port, host):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_for_udp_bound(port: int, timeout: float = 20, host: str = "127.0.0.1",
                       alive: Callable[[], None] | None = None) -> None:
    """Block until something has bound UDP ``host:port`` (an mKCP server, say): binding it
    here fails once the server holds it. ``alive`` as in :func:`wait_for_port`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        if not _bindable(family, socket.SOCK_DGRAM, host, port):
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing bound UDP {host}:{port} after {timeout}s")


async def wait_until(ready: Callable[[], bool], what: str | Callable[[], str],
                     timeout: float = 10.0, alive: Callable[[], None] | None = None) -> None:
    """Without blocking the reactor, wait until ``ready()`` is true (``alive`` as above).

    On timeout, fail with ``what`` (or ``what()``, computed then).
    """
    from twisted.internet import reactor, task

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        if ready():
            return
        await task.deferLater(reactor, 0.05, lambda: None)
    if callable(what):
        what = what()
    raise AssertionError(f"{what} after {timeout}s")


async def wait_for_port_async(port: int, timeout: float = 10.0, host: str = "127.0.0.1",
                              alive: Callable[[], None] | None = None) -> None:
    """:func:`wait_for_port` for reactor tests: the reactor keeps running meanwhile."""
    await wait_until(lambda: accepts(port, host), f"nothing listening on {host}:{port}",
                     timeout, alive)


def reactor_connections(match: Callable[[Any, Any], bool]) -> list[Any]:
    """This process's connected reactor sockets whose (host, peer) addresses ``match``."""
    from twisted.internet import reactor

    found = []
    for s in set(reactor.getReaders()) | set(reactor.getWriters()):
        try:
            host, peer = s.getHost(), s.getPeer()
        except Exception:  # noqa: BLE001 - a listening port, a UDP socket
            continue
        if match(host, peer):
            found.append(s)
    return found


def named_servers(case: Any, names: tuple[str, ...], protocol: Any) -> dict[str, int]:
    """A TCP server on 127.0.0.1 per name, speaking ``protocol`` (whose factory has that
    ``name``), stopped at ``case``'s cleanup; {name: port}."""
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory

    ports = {}
    for name in names:
        factory = Factory.forProtocol(protocol)
        factory.name = name  # type: ignore[attr-defined]
        listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        case.addCleanup(listening.stopListening)
        ports[name] = listening.getHost().port
    return ports
