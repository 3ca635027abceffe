"""The reverse proxy's control message, sans-IO (V2Ray 4.34 app/reverse/config.proto)::

    message Control {
      enum State { ACTIVE = 0; DRAIN = 1; }
      State state = 1;
      bytes random = 99;
    }

The portal sends one every 2 s as a datagram of the control session (a Mux.Cool UDP
session to ``reverse.internal.v2ray.com:0``), with 0…63 random bytes; DRAIN tells the
bridge to stop counting that connection and dial a new one. The message class is the one
generated from V2Ray's own .proto (:mod:`vtwist.app.api.v2raypb`).
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from vtwist.app.api.v2raypb.app_reverse_config_pb2 import Control

__all__ = ["ACTIVE", "DRAIN", "INTERNAL_DOMAIN", "ControlError", "decode_control",
           "encode_control"]

ACTIVE, DRAIN = Control.ACTIVE, Control.DRAIN
#: The destination of the control session (app/reverse/reverse.go ``internalDomain``).
INTERNAL_DOMAIN = "reverse.internal.v2ray.com"


class ControlError(Exception):
    """Not a Control message."""


def encode_control(state: int, random: bytes = b"") -> bytes:
    """A Control message (proto3: zero and empty fields are left out)."""
    return Control(state=state, random=random).SerializeToString()  # type: ignore[arg-type]


def decode_control(data: bytes) -> int:
    """The state of a Control message (ACTIVE when absent)."""
    message = Control()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise ControlError(str(e) or "not a Control message") from None
    return int(message.state)
