"""The TCP endpoints under TLS and the network's layer (tcp and ws ride them)."""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
)
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint
from twisted.internet.posixbase import PosixReactorBase

from vtwist.address import parse_ip
from vtwist.dns.endpoint import ResolvingEndpoint
from vtwist.dns.system import SystemResolver
from vtwist.transport import reuseport
from vtwist.transport.domainsocket.endpoints import server_endpoint as unix_server_endpoint
from vtwist.transport.domainsocket.settings import listen_address
from vtwist.transport.internals import LeanTCPClientEndpoint
from vtwist.transport.tcp.listen import TCPServerEndpoint


def tcp_client_endpoint(reactor: Any, host: str, port: int,
                        timeout: float = 30, resolver: Any = None) -> IStreamClientEndpoint:
    """A TCP client endpoint: straight to an IP literal; a name is resolved first by
    ``resolver`` (a vtwist.dns resolver; None: the system's), then its addresses are tried
    in turn (:class:`vtwist.dns.endpoint.ResolvingEndpoint`).
    """
    ip = parse_ip(host)
    if ip is None:
        return ResolvingEndpoint(resolver or SystemResolver(reactor), host,
                                 lambda ip: tcp_client_endpoint(reactor, ip, port, timeout),
                                 clock=reactor)
    if isinstance(reactor, PosixReactorBase):  # sends at once, no wrapping protocol
        return LeanTCPClientEndpoint(reactor, str(ip), port, timeout=timeout)
    if ip.version == 6:
        return TCP6ClientEndpoint(reactor, str(ip), port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, str(ip), port, timeout=timeout)


# -- registry hooks (vtwist.transport.registry) ---------------------------------------------
def server_base(reactor: Any, listen: str, port: int, stream: Any) -> IStreamServerEndpoint:
    """The TCP listening endpoint under ``stream`` (tcp and ws), PROXY protocol if asked.

    A ``listen`` of ``/path``, ``@name`` or ``@@name`` (padded) is a UNIX socket instead, as
    in V2Ray 4.34 (the port is then unused).
    """
    ip = parse_ip(listen)
    endpoint: IStreamServerEndpoint
    unix = listen_address(listen) if ip is None else None
    if unix is not None:
        endpoint = unix_server_endpoint(reactor, unix)
    elif reuseport.enabled():  # --workers: every worker binds the port (SO_REUSEPORT)
        endpoint = reuseport.tcp_server_endpoint(reactor, port, str(ip) if ip else listen)
    else:  # IPv4 or IPv6 by the address; accepting pauses (not fails) without descriptors
        endpoint = TCPServerEndpoint(reactor, port, str(ip) if ip is not None else listen)
    if stream.accept_proxy_protocol:
        from twisted.protocols.haproxy import proxyEndpoint

        endpoint = proxyEndpoint(endpoint)
    return endpoint


def client_base(reactor: Any, host: str, port: int, stream: Any) -> IStreamClientEndpoint:
    """The TCP connecting endpoint under ``stream`` (tcp and ws)."""
    return tcp_client_endpoint(reactor, host, port)
