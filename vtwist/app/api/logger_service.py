"""``v2ray.core.app.log.command.LoggerService``: RestartLogger reopens the log files."""

from __future__ import annotations

from typing import Any

from vtwist.app.api.errors import GrpcError, Status, decode
from vtwist.app.api.v2raypb import app_log_command_config_pb2 as pb


class LoggerService:
    """Calls the context's ``restart_logger`` (close and reopen the log files)."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.methods = {"RestartLogger": self.RestartLogger}

    def RestartLogger(self, data: bytes) -> bytes:
        """Reopen the logs (after logrotate moved them)."""
        decode(pb.RestartLoggerRequest, data)
        try:
            self.context.restart_logger()
        except Exception as e:  # noqa: BLE001 - an unwritable log file, say
            raise GrpcError(Status.UNKNOWN,
                            f"v2ray.com/core/app/log/command: failed to start logger > {e}") \
                from None
        return pb.RestartLoggerResponse().SerializeToString()


def build(context: Any) -> LoggerService:
    """The service for the API's registry."""
    return LoggerService(context)
