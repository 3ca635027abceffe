"""mKCP segment codec (V2Ray 4.34 wire format, sans-IO).

Three segment shapes share a 4-byte common header ``conv(2) cmd(1) option(1)``:
DATA (cmd 1), ACK (cmd 0) and command-only (PING 3, TERMINATE 2, anything else).
All integers are big-endian.  :func:`parse_segments` follows V2Ray's reader
exactly (see ``mkcp.md`` section 4.6).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

CMD_ACK = 0
CMD_DATA = 1
CMD_TERMINATE = 2
CMD_PING = 3

OPTION_CLOSE = 0x01

#: Fixed bytes of a DATA segment before its payload.
DATA_OVERHEAD = 18
#: Fixed bytes of an ACK segment before its numbers.
ACK_OVERHEAD = 17
#: Size of a command-only segment.
CMD_SIZE = 16
#: V2Ray never puts more than this many numbers in one ACK.
ACK_MAX_NUMBERS = 128

_DATA_HDR = struct.Struct(">HBBIIIH")
_ACK_HDR = struct.Struct(">HBBIIIB")
_CMD = struct.Struct(">HBBIII")
_U32 = struct.Struct(">I")


class DataSegment:
    """A DATA segment (cmd 1)."""

    __slots__ = ("conv", "option", "timestamp", "number", "sending_next", "payload")
    cmd = CMD_DATA

    def __init__(
        self,
        conv: int,
        option: int,
        timestamp: int,
        number: int,
        sending_next: int,
        payload: bytes,
    ) -> None:
        self.conv = conv
        self.option = option
        self.timestamp = timestamp
        self.number = number
        self.sending_next = sending_next
        self.payload = payload

    def encode(self) -> bytes:
        """Serialize to wire bytes."""
        return encode_data(
            self.conv, self.option, self.timestamp, self.number, self.sending_next, self.payload
        )

    def __repr__(self) -> str:
        return (
            f"DataSegment(conv={self.conv:#06x}, option={self.option}, ts={self.timestamp}, "
            f"number={self.number}, sending_next={self.sending_next}, len={len(self.payload)})"
        )


class AckSegment:
    """An ACK segment (cmd 0); ``receiving_window`` is an absolute number."""

    __slots__ = ("conv", "option", "receiving_window", "receiving_next", "timestamp", "numbers")
    cmd = CMD_ACK

    def __init__(
        self,
        conv: int,
        option: int,
        receiving_window: int,
        receiving_next: int,
        timestamp: int,
        numbers: Sequence[int],
    ) -> None:
        self.conv = conv
        self.option = option
        self.receiving_window = receiving_window
        self.receiving_next = receiving_next
        self.timestamp = timestamp
        self.numbers = numbers

    def encode(self) -> bytes:
        """Serialize to wire bytes."""
        return encode_ack(
            self.conv,
            self.option,
            self.receiving_window,
            self.receiving_next,
            self.timestamp,
            self.numbers,
        )

    def __repr__(self) -> str:
        return (
            f"AckSegment(conv={self.conv:#06x}, option={self.option}, "
            f"wnd={self.receiving_window}, next={self.receiving_next}, ts={self.timestamp}, "
            f"numbers={list(self.numbers)})"
        )


class CmdSegment:
    """A command-only segment: PING, TERMINATE or an unknown command."""

    __slots__ = ("conv", "cmd", "option", "sending_next", "receiving_next", "peer_rto")

    def __init__(
        self,
        conv: int,
        cmd: int,
        option: int,
        sending_next: int,
        receiving_next: int,
        peer_rto: int,
    ) -> None:
        self.conv = conv
        self.cmd = cmd
        self.option = option
        self.sending_next = sending_next
        self.receiving_next = receiving_next
        self.peer_rto = peer_rto

    def encode(self) -> bytes:
        """Serialize to wire bytes."""
        return encode_cmd(
            self.conv, self.cmd, self.option, self.sending_next, self.receiving_next, self.peer_rto
        )

    def __repr__(self) -> str:
        return (
            f"CmdSegment(conv={self.conv:#06x}, cmd={self.cmd}, option={self.option}, "
            f"una={self.sending_next}, rcv_nxt={self.receiving_next}, rto={self.peer_rto})"
        )


Segment = DataSegment | AckSegment | CmdSegment


def encode_data(
    conv: int, option: int, timestamp: int, number: int, sending_next: int, payload: bytes
) -> bytes:
    """Encode a DATA segment.  ``payload`` must be non-empty and < 65536 bytes."""
    return (
        _DATA_HDR.pack(
            conv,
            CMD_DATA,
            option,
            timestamp & 0xFFFFFFFF,
            number & 0xFFFFFFFF,
            sending_next & 0xFFFFFFFF,
            len(payload),
        )
        + payload
    )


def encode_ack(
    conv: int,
    option: int,
    receiving_window: int,
    receiving_next: int,
    timestamp: int,
    numbers: Iterable[int],
) -> bytes:
    """Encode an ACK segment (at most 255 numbers)."""
    nums = list(numbers)
    if len(nums) > 255:
        raise ValueError("too many numbers in one ACK")
    head = _ACK_HDR.pack(
        conv,
        CMD_ACK,
        option,
        receiving_window & 0xFFFFFFFF,
        receiving_next & 0xFFFFFFFF,
        timestamp & 0xFFFFFFFF,
        len(nums),
    )
    return head + struct.pack(f">{len(nums)}I", *nums)


def encode_cmd(
    conv: int, cmd: int, option: int, sending_next: int, receiving_next: int, peer_rto: int
) -> bytes:
    """Encode a command-only segment (PING, TERMINATE, ...)."""
    return _CMD.pack(
        conv,
        cmd,
        option,
        sending_next & 0xFFFFFFFF,
        receiving_next & 0xFFFFFFFF,
        peer_rto & 0xFFFFFFFF,
    )


def parse_segments(buf: bytes | bytearray | memoryview) -> list[Segment]:
    """Parse the run of segments in one envelope plaintext, as V2Ray does.

    Parsing stops at the first segment that does not fit; segments parsed before
    it are kept and trailing bytes are ignored.
    """
    data = bytes(buf)
    out: list[Segment] = []
    pos = 0
    end = len(data)
    while end - pos >= 4:
        cmd = data[pos + 2]
        rest = end - pos - 4
        if cmd == CMD_DATA:
            if rest < 15:
                break
            conv, _, option, ts, number, una, n = _DATA_HDR.unpack_from(data, pos)
            start = pos + DATA_OVERHEAD
            if end - start < n:
                break
            out.append(DataSegment(conv, option, ts, number, una, data[start : start + n]))
            pos = start + n
        elif cmd == CMD_ACK:
            if rest < 13:
                break
            conv, _, option, wnd, nxt, ts, k = _ACK_HDR.unpack_from(data, pos)
            start = pos + ACK_OVERHEAD
            if end - start < 4 * k:
                break
            nums = struct.unpack_from(f">{k}I", data, start) if k else ()
            out.append(AckSegment(conv, option, wnd, nxt, ts, nums))
            pos = start + 4 * k
        else:
            if rest < 12:
                break
            conv, cmd, option, una, nxt, rto = _CMD.unpack_from(data, pos)
            out.append(CmdSegment(conv, cmd, option, una, nxt, rto))
            pos += CMD_SIZE
    return out

