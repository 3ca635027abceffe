"""The h2 (http) network's ``IStreamLayer`` (:data:`HTTP2`) and its ``h2:`` endpoint strings."""

from __future__ import annotations

from typing import Any

from vtwist.transport.h2.endpoints import H2Layer
from vtwist.transport.h2.profile import HTTPProfile
from vtwist.transport.h2.settings import HTTPSettings, normalize_path


def _profile(settings: HTTPSettings | None) -> HTTPProfile:
    return HTTPProfile(settings or HTTPSettings())


#: The http network's layer (its registry entry names it).
HTTP2 = H2Layer("h2", _profile)


def _settings(kwargs: dict[str, str]) -> HTTPSettings:
    hosts = [h for h in kwargs.pop("hostHeader", "").split(",") if h]
    settings = HTTPSettings(path=normalize_path(kwargs.pop("path", "/")))
    if hosts:
        settings.hosts = hosts
    return settings


def server_from_string(reactor: Any, *args: str, **kwargs: str) -> Any:
    """``h2:port=P:interface=I:path=/p:hostHeader=a,b[:certFile=F:keyFile=K]`` (h2c without
    a certificate). Fires with the listening port; each stream is a connection."""
    from vtwist.transport.h2.strings import h2_server

    return h2_server(reactor, "h2", {"h2": _settings(kwargs)}, args, kwargs)


def client_from_string(reactor: Any, *args: str, **kwargs: str) -> Any:
    """``h2:host=H:port=P:path=/p:hostHeader=cdn[:tls=true:serverName=N:caFile=F]``."""
    from vtwist.transport.h2.strings import h2_client

    return h2_client(reactor, "h2", {"h2": _settings(kwargs)}, args, kwargs)
