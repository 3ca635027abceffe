"""The API's service registry: which module implements which gRPC service.

``SERVICES`` maps a full gRPC service name to ``"module:build"``; ``build(context)`` (an
:class:`~vtwist.app.api.context.ApiContext`) returns an object whose ``methods`` maps method
names to callables taking the request's serialized protobuf and returning the response's
(bytes, or a Deferred firing with bytes), raising :class:`~vtwist.app.api.errors.GrpcError`
for a status other than OK. A registered module that is missing answers UNIMPLEMENTED.

``api.services`` in the JSON names them briefly (``"StatsService"``): :data:`SHORT_NAMES`.
"""

from __future__ import annotations

import importlib
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="vtwist.api")

SERVICES: dict[str, str] = {
    "v2ray.core.app.stats.command.StatsService": "vtwist.app.api.stats_service:build",
    "v2ray.core.app.log.command.LoggerService": "vtwist.app.api.logger_service:build",
    "v2ray.core.app.proxyman.command.HandlerService": "vtwist.app.api.handler_service:build",
}

#: ``api.services`` entries -> full gRPC service names.
SHORT_NAMES: dict[str, str] = {name.rsplit(".", 1)[1]: name for name in SERVICES}

#: Names V2Ray 4.34 accepts in ``api.services`` that vtwist does not serve (a warning).
UNSERVED: tuple[str, ...] = ("RoutingService", "ReflectionService")


def build_services(names: list[str], context: Any) -> dict[str, Any]:
    """Build the services ``names`` (full gRPC names) lists; a service whose module is
    missing is left out (its calls answer UNIMPLEMENTED)."""
    built: dict[str, Any] = {}
    for name in names:
        ref = SERVICES.get(name)
        if ref is None:
            continue
        module_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            log.warn("api: {name} is not implemented yet", name=name)
            continue
        built[name] = getattr(module, attr)(context)
    return built
