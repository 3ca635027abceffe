"""A gRPC service whose every method answers one clear error (a service that cannot work in
this process, e.g. HandlerService in a ``--workers N`` supervisor)."""

from __future__ import annotations

from typing import Any

from vtwist.app.api.errors import GrpcError, Status

#: HandlerService's methods (v2ray.core.app.proxyman.command)
HANDLER_METHODS = ("AddInbound", "RemoveInbound", "AlterInbound", "AddOutbound",
                   "RemoveOutbound", "AlterOutbound")

#: why the supervisor of ``--workers N`` refuses HandlerService
HANDLER_WITH_WORKERS = (
    "HandlerService is not available with --workers: a change made over the API would "
    "be lost when a worker is started again after a crash, and a call failing in one "
    "worker would leave the workers with different inbounds; change the config file and "
    "reload it (vtwist reload, or SIGHUP), which every worker applies")


class RefusedService:
    """Answers every call of ``methods`` with ``status`` and ``message``."""

    def __init__(self, methods: tuple[str, ...], message: str,
                 status: int = Status.FAILED_PRECONDITION) -> None:
        self.message = message
        self.status = status
        self.methods = {name: self._refuse for name in methods}

    def _refuse(self, data: bytes) -> Any:
        raise GrpcError(self.status, self.message)


def handler_with_workers() -> RefusedService:
    """HandlerService as a ``--workers N`` supervisor serves it: refused."""
    return RefusedService(HANDLER_METHODS, HANDLER_WITH_WORKERS)
