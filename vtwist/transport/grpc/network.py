"""The grpc network's ``IStreamLayer`` (:data:`GUN`) and its ``grpc:`` endpoint strings."""

from __future__ import annotations

from typing import Any

from vtwist.transport.grpc.profile import GunProfile
from vtwist.transport.grpc.settings import GRPCSettings
from vtwist.transport.h2.endpoints import H2Layer


def _profile(settings: GRPCSettings | None) -> GunProfile:
    return GunProfile(settings or GRPCSettings())


#: The grpc network's layer (its registry entry names it).
GUN = H2Layer("grpc", _profile)


def _settings(kwargs: dict[str, str]) -> GRPCSettings:
    return GRPCSettings(service_name=kwargs.pop("serviceName", ""),
                        multi_mode=kwargs.pop("mode", "gun").lower() == "multi",
                        authority=kwargs.pop("authority", ""))


def server_from_string(reactor: Any, *args: str, **kwargs: str) -> Any:
    """``grpc:port=P:interface=I:serviceName=S[:certFile=F:keyFile=K]`` (h2c without a
    certificate; the server takes both Tun and TunMulti)."""
    from vtwist.transport.h2.strings import h2_server

    return h2_server(reactor, "grpc", {"grpc": _settings(kwargs)}, args, kwargs)


def client_from_string(reactor: Any, *args: str, **kwargs: str) -> Any:
    """``grpc:host=H:port=P:serviceName=S[:mode=multi][:tls=true:serverName=N:caFile=F]``."""
    from vtwist.transport.h2.strings import h2_client

    return h2_client(reactor, "grpc", {"grpc": _settings(kwargs)}, args, kwargs)
