"""Domain-socket endpoints: Twisted's UNIX endpoints at the address dsSettings (or an
inbound's ``/path`` / ``@name`` listen address) gives.

A file-system socket is created with a ``.lock`` file beside it (as V2Ray does; a stale
socket left by a process that died holding the lock is replaced) and removed when the
listener stops. In a worker of ``--workers N`` the supervisor has bound the socket
(:func:`hold`, the same rules) and the endpoint adopts it (:mod:`.shared`).

Endpoint strings: ``ds:path=/run/x.sock`` or ``ds:path=@name[:padding=1]`` (``abstract=1``
puts a plain name in the abstract namespace), for servers and clients.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import UNIXClientEndpoint, UNIXServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory

from vtwist.transport.domainsocket import shared
from vtwist.transport.domainsocket.settings import DSSettings, socket_address

_TRUE = ("1", "true", "yes", "on")


def _options(address: str) -> dict[str, Any]:
    """How a socket at ``address`` listens: world read/writable, and a file-system one with
    its ``.lock`` file (Twisted's ``wantPID``), so a stale socket is replaced."""
    return {"mode": 0o666, "wantPID": not address.startswith("\0")}


def server_endpoint(reactor: Any, address: str) -> IStreamServerEndpoint:
    """Listen on a socket address (a path, or a NUL-led abstract name); in a worker, adopt
    the supervisor's socket at that address."""
    fd = shared.shared_fd(address)
    if fd is not None:
        return shared.SharedUNIXServerEndpoint(reactor, fd)
    return UNIXServerEndpoint(reactor, address, **_options(address))


def hold(reactor: Any, address: str) -> IListeningPort:
    """Bind and listen on ``address`` as :func:`server_endpoint` does, but accept nothing:
    the ``--workers`` supervisor passes ``port.fileno()`` to its workers, and
    ``port.stopListening()`` removes the path and its lock (as a stopping listener does).
    Raises :class:`twisted.internet.error.CannotListenError`."""
    factory = Factory()
    factory.noisy = False
    port = reactor.listenUNIX(address, factory, **_options(address))
    port.stopReading()  # the workers accept; the reactor never sees a connection here
    return port  # type: ignore[no-any-return]


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
