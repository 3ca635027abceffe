"""gRPC status codes and the error a service raises to answer with one."""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """gRPC status codes (``grpc-status``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class GrpcError(Exception):
    """Raised (or errbacked) by a service method: the call ends with ``status_code`` and
    ``message`` in its trailers (``grpc-status`` / ``grpc-message``)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = int(status_code)
        self.message = message

    def __repr__(self) -> str:
        return f"GrpcError({Status(self.status_code).name}, {self.message!r})" \
            if self.status_code in Status._value2member_map_ else \
            f"GrpcError({self.status_code}, {self.message!r})"


def decode(message_class: type, data: bytes) -> object:
    """``data`` parsed as ``message_class``; a protobuf that does not decode is
    ``INTERNAL "grpc: error unmarshalling request: ..."``, as grpc-go (V2Ray) answers."""
    from google.protobuf.message import DecodeError

    message = message_class()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise GrpcError(Status.INTERNAL, f"grpc: error unmarshalling request: {e}") from None
    return message
