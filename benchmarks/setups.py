"""Proxies under test: one process (SOCKS5 -> freedom) or a client/server chain.

A :class:`Setup` starts its processes inside a :class:`~benchmarks.procs.ProcessGroup`
and exposes the SOCKS5 port where the load enters. ``family`` is ``vtwist``, ``v2ray`` or
``pproxy``; the first setup of a comparison is the subject of the ratios.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from benchmarks import configs
from benchmarks.procs import (
    Proc,
    ProcessGroup,
    free_port,
    vtwist_command,
    wait_listeners,
    wait_port,
    wait_udp_bound,
)

V2RAY = "/usr/bin/v2ray"


def impl_argv(impl: str, config_path: str, workers: int = 1) -> list[str]:
    """The command line running ``impl`` (vtwist or v2ray) on a config file (vtwist with
    ``workers`` processes)."""
    if impl == "vtwist":
        return vtwist_command(config_path, workers)
    if impl == "v2ray":
        return [V2RAY, "-config", config_path]
    raise ValueError(f"unknown implementation {impl!r}")


class Setup:
    """Something with a SOCKS5 entry port that forwards to the sink."""

    def __init__(self, name: str, family: str, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.family = family
        #: extra environment of its processes (``PYTHONPATH`` of a baseline vtwist tree)
        self.env = env
        self.procs: list[Proc] = []
        self.socks_port = 0
        #: how the load enters: "socks5", or "http" (CONNECT) on the same port attribute
        self.entry = "socks5"
        self.error: str | None = None

    @property
    def tag(self) -> str:
        """The name as a file-name part."""
        return self.name.replace("@", "-")

    def start(self, group: ProcessGroup) -> None:
        """Start the processes and wait until the entry port listens."""
        raise NotImplementedError

    def describe_failure(self) -> str:
        """The tail of each process's log, for an error report."""
        return "\n".join(f"--- {p.name} (pid {p.pid}) ---\n{p.log_tail()}" for p in self.procs)


class SocksProxy(Setup):
    """vtwist or V2Ray running SOCKS5 in, freedom out."""

    def __init__(self, impl: str, name: str | None = None,
                 env: dict[str, str] | None = None, workers: int = 1) -> None:
        super().__init__(name or impl, impl, env)
        #: vtwist ``--workers``
        self.workers = workers

    def start(self, group: ProcessGroup) -> None:
        """One process on one config (a supervisor and its workers with ``workers``)."""
        self.socks_port = free_port()
        tag = f"socks-{self.tag}"
        path = group.write_config(tag, configs.socks_freedom(
            self.socks_port, str(group.workdir / f"{tag}-access.log")))
        proc = group.spawn(tag, impl_argv(self.family, path, self.workers), env=self.env)
        self.procs = [proc]
        wait_port(self.socks_port, proc.popen)
        wait_listeners(self.socks_port, self.workers, proc.popen)


class HttpProxy(Setup):
    """vtwist or V2Ray running an HTTP proxy in (the load uses CONNECT), freedom out."""

    def __init__(self, impl: str, name: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(name or impl, impl, env)
        self.entry = "http"

    def start(self, group: ProcessGroup) -> None:
        """One process on one config."""
        self.socks_port = free_port()
        tag = f"http-{self.tag}"
        path = group.write_config(tag, configs.http_freedom(
            self.socks_port, str(group.workdir / f"{tag}-access.log")))
        proc = group.spawn(tag, impl_argv(self.family, path), env=self.env)
        self.procs = [proc]
        wait_port(self.socks_port, proc.popen)


class PProxy(Setup):
    """pproxy, the common asyncio Python proxy: ``pproxy -l socks5://127.0.0.1:PORT`` (or
    ``http://`` with ``scheme="http"``)."""

    def __init__(self, scheme: str = "socks5") -> None:
        super().__init__("pproxy", "pproxy")
        self.scheme = scheme
        self.entry = "http" if scheme == "http" else "socks5"

    def start(self, group: ProcessGroup) -> None:
        """One pproxy process."""
        self.socks_port = free_port()
        proc = group.spawn("pproxy", ["pproxy", "-l",
                                      f"{self.scheme}://127.0.0.1:{self.socks_port}"])
        self.procs = [proc]
        wait_port(self.socks_port, proc.popen)


Middle = Callable[[ProcessGroup, int], tuple[Proc | None, int]]


class Chain(Setup):
    """SOCKS5 -> client (``protocol`` out: vmess, shadowsocks) -> [middle relay] -> server
    (``protocol`` in) -> freedom.

    ``client_stream`` / ``server_stream`` are the two ``streamSettings``; ``middle``, when
    given, starts something between them (the UDP impairment relay) and returns the port the
    client must dial. ``server_tcp`` says whether the server listens on TCP (else UDP); the
    client starts only once the server's port is taken.
    """

    def __init__(self, impl: str, security: str, variant: str,
                 client_stream: dict[str, Any] | None = None,
                 server_stream: dict[str, Any] | None = None,
                 middle: Middle | None = None, server_tcp: bool = True,
                 name: str | None = None, env: dict[str, str] | None = None,
                 protocol: str = "vmess", workers: int = 1) -> None:
        super().__init__(name or impl, impl, env)
        self.protocol = protocol
        #: vtwist ``--workers`` of both the client and the server
        self.workers = workers
        self.security = security
        self.variant = variant
        self.client_stream = client_stream
        self.server_stream = server_stream
        self.middle = middle
        self.server_tcp = server_tcp

    def start(self, group: ProcessGroup) -> None:
        """Server first, then the optional middle, then the client."""
        server_port = free_port(socket.SOCK_STREAM if self.server_tcp else socket.SOCK_DGRAM)
        tag = f"{self.variant}-{self.tag}"
        spath = group.write_config(f"{tag}-server", configs.chain_server(
            self.protocol, server_port, self.security,
            str(group.workdir / f"{tag}-server-access.log"), self.server_stream))
        server = group.spawn(f"{tag}-server", impl_argv(self.family, spath, self.workers),
                             env=self.env)
        self.procs = [server]
        if self.server_tcp:
            wait_port(server_port, server.popen)
            wait_listeners(server_port, self.workers, server.popen)  # every worker
        else:
            wait_udp_bound(server_port, server.popen)
        dial = server_port
        if self.middle is not None:
            _relay, dial = self.middle(group, server_port)  # the group owns (and stops) it
        self.socks_port = free_port()
        cpath = group.write_config(f"{tag}-client", configs.chain_client(
            self.protocol, self.socks_port, dial, self.security,
            str(group.workdir / f"{tag}-client-access.log"), self.client_stream))
        client = group.spawn(f"{tag}-client", impl_argv(self.family, cpath, self.workers),
                             env=self.env)
        self.procs = [client, server]
        wait_port(self.socks_port, client.popen)
        wait_listeners(self.socks_port, self.workers, client.popen)
