"""Endpoint strings (``kcp:...``, ``ws:...``, ``wss:...``) through the network registry.

:func:`parse_server` / :func:`parse_client` are what the dropins in ``twisted/plugins``
call (importing vtwist only then): they look the prefix up in
:mod:`vtwist.transport.registry`.
The ws/wss client strings are built here, over :mod:`vtwist.transport.stack`.
"""

from __future__ import annotations

from typing import Any

from vtwist.transport import registry


def _parsers(prefix: str) -> registry.EndpointString:
    entry = registry.endpoint_string(prefix)
    if entry is None:
        raise ValueError(f"no network registers the endpoint prefix {prefix!r}")
    return entry


def parse_server(prefix: str, reactor: Any, *args: Any, **kwargs: Any) -> Any:
    """``serverFromString`` for ``prefix``: the registry entry's server parser."""
    entry = _parsers(prefix)
    if entry.server is None:
        raise ValueError(f"{prefix}: has no server endpoint string")
    return registry.resolve(entry.server)(reactor, *args, **kwargs)


def parse_client(prefix: str, reactor: Any, *args: Any, **kwargs: Any) -> Any:
    """``clientFromString`` for ``prefix``: the registry entry's client parser."""
    entry = _parsers(prefix)
    if entry.client is None:
        raise ValueError(f"{prefix}: has no client endpoint string")
    return registry.resolve(entry.client)(reactor, *args, **kwargs)


# -- ws: / wss: ------------------------------------------------------------------------------
def ws_client(reactor: Any, *args: str, **kwargs: str) -> Any:
    """``ws:host=H:port=P:path=/p:hostHeader=cdn`` (see :func:`ws_client_from_string`)."""
    return ws_client_from_string(reactor, False, *args, **kwargs)


def wss_client(reactor: Any, *args: str, **kwargs: str) -> Any:
    """``wss:host=H:path=/p:serverName=N:caFile=F`` (see :func:`ws_client_from_string`)."""
    return ws_client_from_string(reactor, True, *args, **kwargs)


def ws_client_from_string(reactor: Any, secure: bool, *args: str, **kwargs: str) -> Any:
    """``ws:host=H:port=P:path=/p:hostHeader=cdn`` and ``wss:...:serverName=N:caFile=F``.

    ``host`` and ``port`` may also be given positionally (``ws:example.com:80``). For wss,
    ``caFile`` adds a trusted CA (PEM) to the system roots, ``allowInsecure=true`` skips
    verification. The Deferred fires after the upgrade, as with the other ws endpoints.
    """
    from vtwist.transport import stack
    from vtwist.transport.settings import StreamSettings
    from vtwist.transport.tcp.endpoints import tcp_client_endpoint
    from vtwist.transport.tls.settings import TLSCertificate, TLSSettings
    from vtwist.transport.ws.settings import WSSettings, normalize_path

    positional = list(args)
    host = kwargs.pop("host", None) or (positional.pop(0) if positional else None)
    if not host:
        raise ValueError("ws endpoint needs host=")
    port_text = kwargs.pop("port", None) or (positional.pop(0) if positional else None)
    port = int(port_text) if port_text else (443 if secure else 80)
    if positional:
        raise ValueError(f"unexpected arguments {positional}")
    settings = WSSettings(path=normalize_path(kwargs.pop("path", "/")),
                          host=kwargs.pop("hostHeader", None))
    timeout = float(kwargs.pop("timeout", "30"))
    server_name = kwargs.pop("serverName", "")
    ca_file = kwargs.pop("caFile", None)
    insecure = kwargs.pop("allowInsecure", "false").lower() in ("1", "true", "yes")
    if kwargs:
        raise ValueError(f"unknown ws endpoint options: {', '.join(sorted(kwargs))}")
    stream = StreamSettings(network="ws", network_settings={"ws": settings})
    if secure:
        stream.security = "tls"
        stream.tls = TLSSettings(server_name=server_name, allow_insecure=insecure)
        if ca_file:
            from cryptography import x509

            try:
                with open(ca_file, "rb") as f:
                    chain = x509.load_pem_x509_certificates(f.read())
            except (OSError, ValueError) as e:
                raise ValueError(f"caFile {ca_file!r}: {e}") from None
            stream.tls.certificates.append(TLSCertificate("verify", chain))
    elif server_name or ca_file or insecure:
        raise ValueError("serverName, caFile and allowInsecure need wss:")
    # The base is TCP with the string's connect timeout; TLS and WebSocket go above it.
    base = tcp_client_endpoint(reactor, host, port, timeout=timeout)
    return stack.wrap_client(reactor, base, host, port, stream)
