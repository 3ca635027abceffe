"""Endpoint strings for the tunnels over HTTP/2 (``h2:``, ``grpc:``), server and client.

Common keys: ``host``/``port`` (client; also positional), ``port``/``interface`` (server),
``tls=true`` with ``serverName``/``caFile``/``allowInsecure`` (client) or
``certFile``/``keyFile`` (server; TLS implied). Without TLS the tunnel is h2c (prior
knowledge). The network's own keys are read by its parser before these helpers run.
"""

from __future__ import annotations

from typing import Any

from vtwist.config.node import Node
from vtwist.transport.settings import StreamSettings
from vtwist.transport.tls.settings import parse_tls_settings


def _flag(kwargs: dict[str, str], key: str) -> bool:
    return kwargs.pop(key, "false").lower() in ("1", "true", "yes")


def _tls(obj: dict[str, Any], inbound: bool) -> Any:
    def warn(message: str) -> None:
        raise ValueError(message)

    try:
        return parse_tls_settings(Node(obj, "tls", warn), inbound)
    except Exception as e:  # noqa: BLE001 - a ConfigError: say it as the string's error
        raise ValueError(str(e)) from None


def h2_server(reactor: Any, network: str, settings: dict[str, Any], args: tuple[str, ...],
              kwargs: dict[str, str]) -> Any:
    """The server endpoint for ``network`` with its parsed ``settings``."""
    from vtwist.transport import stack

    positional = list(args)
    port = int(kwargs.pop("port", None) or (positional.pop(0) if positional else 0))
    interface = kwargs.pop("interface", "0.0.0.0")
    cert, key = kwargs.pop("certFile", None), kwargs.pop("keyFile", None)
    if positional or kwargs:
        raise ValueError(f"unknown {network} endpoint options: "
                         f"{', '.join(sorted(kwargs) + positional)}")
    stream = StreamSettings(network=network, network_settings=settings)
    if cert or key:
        if not (cert and key):
            raise ValueError("certFile and keyFile go together")
        stream.security = "tls"
        stream.tls = _tls({"certificates": [{"certificateFile": cert, "keyFile": key}]}, True)
    return stack.server_endpoint(reactor, interface, port, stream)


def h2_client(reactor: Any, network: str, settings: dict[str, Any], args: tuple[str, ...],
              kwargs: dict[str, str]) -> Any:
    """The client endpoint for ``network`` with its parsed ``settings``."""
    from vtwist.transport import stack
    from vtwist.transport.tcp.endpoints import tcp_client_endpoint

    positional = list(args)
    host = kwargs.pop("host", None) or (positional.pop(0) if positional else None)
    if not host:
        raise ValueError(f"{network} endpoint needs host=")
    secure = _flag(kwargs, "tls")
    port_text = kwargs.pop("port", None) or (positional.pop(0) if positional else None)
    port = int(port_text) if port_text else (443 if secure else 80)
    timeout = float(kwargs.pop("timeout", "30"))
    tls: dict[str, Any] = {}
    if "serverName" in kwargs:
        tls["serverName"] = kwargs.pop("serverName")
    if "caFile" in kwargs:
        tls["certificates"] = [{"certificateFile": kwargs.pop("caFile"), "usage": "verify"}]
    if _flag(kwargs, "allowInsecure"):
        tls["allowInsecure"] = True
    if positional or kwargs:
        raise ValueError(f"unknown {network} endpoint options: "
                         f"{', '.join(sorted(kwargs) + positional)}")
    stream = StreamSettings(network=network, network_settings=settings)
    if secure:
        stream.security = "tls"
        stream.tls = _tls(tls, False)
    elif tls:
        raise ValueError("serverName, caFile and allowInsecure need tls=true")
    base = tcp_client_endpoint(reactor, host, port, timeout=timeout)
    return stack.wrap_client(reactor, base, host, port, stream)
