"""Domain-socket endpoints: Twisted's UNIX endpoints at the address dsSettings (or an
inbound's ``/path`` / ``@name`` listen address) gives.

A file-system socket is created with a ``.lock`` file beside it (as V2Ray does; a stale
socket left by a process that died holding the lock is replaced) and removed when the
listener stops. Endpoint strings: ``ds:path=/run/x.sock`` or ``ds:path=@name[:padding=1]``
(``abstract=1`` puts a plain name in the abstract namespace), for servers and clients.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint, IStreamServerEndpoint

from vtwist.transport.domainsocket.settings import DSSettings, socket_address

_TRUE = ("1", "true", "yes", "on")


def server_endpoint(reactor: Any, address: str) -> IStreamServerEndpoint:
    """Listen on a socket address (a path, or a NUL-led abstract name)."""
    abstract = address.startswith("\0")
    return UNIXServerEndpoint(reactor, address, mode=0o666, wantPID=not abstract)


def client_endpoint(reactor: Any, address: str, timeout: float = 30) -> IStreamClientEndpoint:
    """Connect to a socket address."""
    return UNIXClientEndpoint(reactor, address, timeout=timeout)


def _settings(stream: Any) -> DSSettings:
    settings = stream.network_settings.get("domainsocket")
    if settings is None:
        raise ValueError("domainsocket needs dsSettings.path")
    return settings  # type: ignore[no-any-return]


# -- registry hooks (vtwist.transport.registry) -------------------------------------------
def server_base(reactor: Any, listen: str, port: int, stream: Any) -> IStreamServerEndpoint:
    """The listening endpoint at dsSettings' address (``listen`` and ``port`` unused, as in
    V2Ray)."""
    return server_endpoint(reactor, _settings(stream).address)


def client_base(reactor: Any, host: str, port: int, stream: Any) -> IStreamClientEndpoint:
    """The connecting endpoint to dsSettings' address (the server address is unused)."""
    return client_endpoint(reactor, _settings(stream).address)


def _address(path: str | None, abstract: str, padding: str) -> str:
    if not path:
        raise ValueError("ds endpoint needs path=")
    return socket_address(path, abstract.lower() in _TRUE, padding.lower() in _TRUE)


def server_from_string(reactor: Any, path: str | None = None, abstract: str = "0",
                       padding: str = "0") -> IStreamServerEndpoint:
    """``ds:path=...`` for ``serverFromString``."""
    return server_endpoint(reactor, _address(path, abstract, padding))


def client_from_string(reactor: Any, path: str | None = None, abstract: str = "0",
                       padding: str = "0", timeout: str = "30") -> IStreamClientEndpoint:
    """``ds:path=...`` for ``clientFromString``."""
    return client_endpoint(reactor, _address(path, abstract, padding), float(timeout))
