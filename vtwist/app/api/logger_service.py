"""``v2ray.core.app.log.command.LoggerService``: RestartLogger reopens the log files.

With ``--workers N`` the supervisor's ``restart_logger`` reopens its own files and asks
every worker to reopen theirs; the call is answered once all have (a Deferred).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from vtwist.app.api.errors import GrpcError, Status, decode
from vtwist.app.api.v2raypb import app_log_command_config_pb2 as pb


class LoggerService:
    """Calls the context's ``restart_logger`` (close and reopen the log files)."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.methods = {"RestartLogger": self.RestartLogger}

    def RestartLogger(self, data: bytes) -> bytes | Deferred[bytes]:
        """Reopen the logs (after logrotate moved them)."""
        decode(pb.RestartLoggerRequest, data)
        answer = pb.RestartLoggerResponse().SerializeToString()
        try:
            result = self.context.restart_logger()
        except Exception as e:  # noqa: BLE001 - an unwritable log file, say
            raise _failed(e) from None
        if isinstance(result, Deferred):
            def failed(failure: Failure) -> Failure:
                return Failure(_failed(failure.value))

            return result.addCallbacks(lambda _: answer, failed)
        return answer


def _failed(why: BaseException) -> GrpcError:
    """V2Ray's words for a logger that could not start again."""
    if isinstance(why, GrpcError):
        return why
    return GrpcError(Status.UNKNOWN,
                     f"v2ray.com/core/app/log/command: failed to start logger > {why}")


def build(context: Any) -> LoggerService:
    """The service for the API's registry."""
    return LoggerService(context)
