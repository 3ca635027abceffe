"""Mux.Cool frames, sans-IO: :class:`FrameDecoder` turns the carrier's bytes into
:class:`Frame` events, the ``encode_*`` functions build frames.

Layout (V2Ray 4.34 common/mux/frame.go; ``/work/shared/protocol/mux.md`` §2)::

    u16 metaLen | metadata | [u16 dataLen | data]      (data only when option & 0x01)
    metadata = u16 id | u8 status | u8 option | (New: u8 network | u16 port | address)

The decoder applies 4.34's reader rules: metadata of 4…512 bytes (New: at least 8), port
before address, address types 1/2/3, trailing metadata ignored, a UDP datagram over 2048
bytes fatal. It tolerates Xray's forms: the 8-byte XUDP global id after a UDP New's address
and an address on a UDP Keep frame (both reported on the frame). Anything else it cannot
read raises :class:`MuxError`, and the decoder is then unusable.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Container, Iterable

from vtwist.address import Destination, is_valid_domain, normalize_host
from vtwist.sansio import Event

__all__ = [
    "END", "KEEP", "KEEPALIVE", "MAX_METADATA", "MAX_TCP_DATA", "MAX_UDP_DATA", "NEW",
    "NET_TCP", "NET_UDP", "OPT_DATA", "OPT_ERROR", "Frame", "FrameDecoder", "MuxError",
    "encode_address", "encode_end", "encode_keep", "encode_keepalive", "encode_new",
    "split_stream",
]

NEW, KEEP, END, KEEPALIVE = 1, 2, 3, 4
STATUS_NAMES = {NEW: "New", KEEP: "Keep", END: "End", KEEPALIVE: "KeepAlive"}
OPT_DATA, OPT_ERROR = 0x01, 0x02
NET_TCP, NET_UDP = 1, 2
ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 2, 3

#: The longest metadata 4.34's reader accepts.
MAX_METADATA = 512
#: The most TCP bytes the 4.34 writer puts into one frame (what vtwist writes too).
MAX_TCP_DATA = 8192
#: The largest UDP datagram 4.34 reads from a frame (``buf.Size``); more is fatal.
MAX_UDP_DATA = 2048

#: statuses whose 4-byte metadata is the whole frame head (parse_metadata's plain cases)
_PLAIN = frozenset({KEEP, END, KEEPALIVE})
_HEAD = struct.Struct(">H")
_META4 = struct.Struct(">HHBB")  # metaLen 4, id, status, option
_KEEP_HEAD = struct.Struct(">HHBBH")


class MuxError(Exception):
    """The carrier's bytes are not Mux.Cool that 4.34 would read; the connection must end."""


class Frame(Event):
    """One decoded frame.

    ``target`` is the New frame's destination, or the address an Xray UDP Keep frame
    carries; ``global_id`` the 8 bytes of an XUDP New; ``data`` None when the frame has no
    Data bit.
    """

    __slots__ = ("session_id", "status", "option", "target", "data", "global_id")

    def __init__(self, session_id: int, status: int, option: int,
                 target: Destination | None = None, data: bytes | None = None,
                 global_id: bytes | None = None) -> None:
        self.session_id = session_id
        self.status = status
        self.option = option
        self.target = target
        self.data = data
        self.global_id = global_id

    @property
    def error(self) -> bool:
        """The Error option bit (an End that aborts both directions)."""
        return bool(self.option & OPT_ERROR)

    def __repr__(self) -> str:
        size = None if self.data is None else len(self.data)
        return (f"Frame(id={self.session_id}, {STATUS_NAMES.get(self.status, self.status)}, "
                f"option={self.option:#x}, target={self.target}, data={size})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


def _address(meta: bytes, at: int, network: str) -> tuple[Destination, int]:
    """Port then address from ``meta[at:]``: the destination and the offset after it."""
    if len(meta) < at + 4:
        raise MuxError("truncated address in metadata")
    port = (meta[at] << 8) | meta[at + 1]
    atyp = meta[at + 2]
    at += 3
    if atyp == ATYP_IPV4:
        end = at + 4
        if len(meta) < end:
            raise MuxError("truncated IPv4 address in metadata")
        host = str(ipaddress.IPv4Address(meta[at:end]))
    elif atyp == ATYP_IPV6:
        end = at + 16
        if len(meta) < end:
            raise MuxError("truncated IPv6 address in metadata")
        host = normalize_host(str(ipaddress.IPv6Address(meta[at:end])))
    elif atyp == ATYP_DOMAIN:
        n = meta[at]
        end = at + 1 + n
        if n == 0 or len(meta) < end:
            raise MuxError("empty or truncated domain in metadata")
        try:
            host = meta[at + 1:end].decode("ascii")
        except UnicodeDecodeError:
            raise MuxError("invalid domain in metadata") from None
        if not is_valid_domain(host):
            raise MuxError(f"invalid domain {host!r} in metadata")
        if host[:1].isdigit() or host[:1] == "[":
            host = normalize_host(host)
    else:
        raise MuxError(f"unknown address type {atyp}")
    return Destination(network, host, port), end  # type: ignore[arg-type]


#: a New frame's destination by its metadata after the id/status/option (network, port,
#: address, anything after): a server sees the same few destinations again and again
#: (cleared whole when full)
_NEW_TARGETS: dict[bytes, tuple[Destination, int]] = {}
_NEW_TARGET_CACHE = 4096


def parse_metadata(meta: bytes) -> Frame:
    """A frame (without its data) from its metadata bytes; raises :class:`MuxError`."""
    if len(meta) < 4:
        raise MuxError(f"metadata too short ({len(meta)} bytes)")
    sid, status, option = (meta[0] << 8) | meta[1], meta[2], meta[3]
    if status == NEW:
        if len(meta) < 8:
            raise MuxError(f"New metadata too short ({len(meta)} bytes)")
        key = meta[4:]
        known = _NEW_TARGETS.get(key)
        if known is None:
            net = meta[4]
            if net == NET_TCP:
                network = "tcp"
            elif net == NET_UDP:
                network = "udp"
            else:
                raise MuxError(f"unknown network {net} in New frame")
            known = _address(meta, 5, network)
            if len(_NEW_TARGETS) >= _NEW_TARGET_CACHE:
                _NEW_TARGETS.clear()
            _NEW_TARGETS[key] = known
        target, end = known
        global_id = meta[end:end + 8] if meta[4] == NET_UDP and len(meta) >= end + 8 else None
        return Frame(sid, status, option, target, None, global_id)
    if status == KEEP:
        if len(meta) > 4 and meta[4] == NET_UDP:  # Xray: the datagram's address
            try:
                target, _ = _address(meta, 5, "udp")
            except MuxError:
                target = None  # 4.34 ignores these bytes; so may we
            return Frame(sid, status, option, target)
        return Frame(sid, status, option)
    if status in (END, KEEPALIVE):
        return Frame(sid, status, option)
    raise MuxError(f"unknown status {status}")


class FrameDecoder:
    """Reassembles frames from the carrier's byte stream (chunk boundaries mean nothing).

    ``udp_sessions`` answers ``id in udp_sessions`` for the ids that are UDP sessions, so
    their datagrams get the 2048-byte limit (a UDP New's own datagram does too).
    """

    def __init__(self, udp_sessions: Container[int] = ()) -> None:
        self.udp_sessions = udp_sessions
        self._buf = bytearray()
        self._pos = 0
        self._pending: Frame | None = None  # metadata read, data not yet
        self.dead = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet part of a returned frame."""
        return len(self._buf) - self._pos

    @property
    def at_boundary(self) -> bool:
        """True when no partial frame is buffered (an end here is clean)."""
        return self._pending is None and self.buffered == 0

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes; the complete frames so far. Raises :class:`MuxError` on bad input."""
        return self.feed_all((data,))

    def feed_all(self, pieces: Iterable[bytes | bytearray | memoryview]) -> list[Frame]:
        """:meth:`feed` of several pieces in a row (one parse for all of them)."""
        self._take(pieces)
        return self._parse()

    def feed_compact(self, pieces: Iterable[bytes | bytearray | memoryview]
                     ) -> list[Frame | tuple[int, int, int, bytes | None]]:
        """:meth:`feed_all`, but a plain Keep / End / KeepAlive frame (4-byte metadata)
        comes as the tuple ``(session_id, status, option, data)`` rather than a
        :class:`Frame` (no object per frame on the carrier's hot path)."""
        self._take(pieces)
        return self._parse(True)  # type: ignore[return-value]

    def _take(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        if self.dead:
            raise MuxError("decoder already failed")
        buf = self._buf
        if self._pos and self._pos == len(buf):
            buf.clear()
            self._pos = 0
        for piece in pieces:
            buf += piece

    def _parse(self, compact: bool = False) -> list[Frame]:
        buf = self._buf
        frames: list[Frame] = []
        append = frames.append
        pos = self._pos
        end = len(buf)
        frame = self._pending  # metadata read, data not yet (kept here until the end)
        view = memoryview(buf)  # data slices copy once; released before buf changes size
        try:
            while True:
                if frame is None:
                    if end - pos < 6:  # metaLen and the shortest metadata (4)
                        if end - pos >= 2:
                            self._checkLength((buf[pos] << 8) | buf[pos + 1])
                        break
                    mlen = (buf[pos] << 8) | buf[pos + 1]
                    if mlen == 4 and buf[pos + 4] in _PLAIN:  # Keep / End / KeepAlive, inline
                        sid = (buf[pos + 2] << 8) | buf[pos + 3]
                        status = buf[pos + 4]
                        option = buf[pos + 5]
                        if not option & OPT_DATA:
                            pos += 6
                            append((sid, status, option, None) if compact
                                   else Frame(sid, status, option))
                            continue
                        if end - pos >= 8:  # the data's length is here
                            dlen = (buf[pos + 6] << 8) | buf[pos + 7]
                            if end - pos >= 8 + dlen and (
                                    dlen <= MAX_UDP_DATA or status != KEEP
                                    or sid not in self.udp_sessions):
                                # the whole frame is here (and no UDP datagram over the
                                # limit, which the general path below reports)
                                data = bytes(view[pos + 8:pos + 8 + dlen])
                                pos += 8 + dlen
                                append((sid, status, option, data) if compact
                                       else Frame(sid, status, option, None, data))
                                continue
                        frame = Frame(sid, status, option)
                        pos += 6
                    else:
                        if mlen > MAX_METADATA or mlen < 4:
                            self._checkLength(mlen)
                        if end - pos < 2 + mlen:
                            break
                        known = _NEW_TARGETS.get(bytes(view[pos + 6:pos + 2 + mlen])) \
                            if buf[pos + 4] == NEW and mlen >= 8 else None
                        if known is not None and buf[pos + 6] == NET_TCP:
                            # a TCP New to a destination seen before (parse_metadata, inline)
                            frame = Frame((buf[pos + 2] << 8) | buf[pos + 3], NEW,
                                          buf[pos + 5], known[0])
                        else:
                            frame = parse_metadata(bytes(view[pos + 2:pos + 2 + mlen]))
                        pos += 2 + mlen
                    if not frame.option & OPT_DATA:
                        append(frame)
                        frame = None
                        continue
                if end - pos < 2:
                    break
                dlen = (buf[pos] << 8) | buf[pos + 1]
                if dlen > MAX_UDP_DATA and self._isUDP(frame):
                    raise MuxError(f"UDP datagram of {dlen} bytes (over {MAX_UDP_DATA})")
                if end - pos < 2 + dlen:
                    break
                frame.data = bytes(view[pos + 2:pos + 2 + dlen])
                pos += 2 + dlen
                append(frame)
                frame = None
        except MuxError:
            self.dead = True
            raise
        finally:
            view.release()
        self._pending = frame
        if pos == end:
            buf.clear()
            pos = 0
        elif pos > 65536:
            del buf[:pos]
            pos = 0
        self._pos = pos
        return frames

    @staticmethod
    def _checkLength(mlen: int) -> None:
        """Raise :class:`MuxError` for a metadata length 4.34 would not read."""
        if mlen > MAX_METADATA:
            raise MuxError(f"metadata too long ({mlen} bytes)")
        if mlen < 4:
            raise MuxError(f"metadata too short ({mlen} bytes)")

    def _isUDP(self, frame: Frame) -> bool:
        if frame.status == NEW:
            return frame.target is not None and frame.target.network == "udp"
        if frame.status == KEEP:
            return frame.target is not None or frame.session_id in self.udp_sessions
        return False

    def end(self) -> None:
        """The carrier ended: raise :class:`MuxError` if a frame was cut short."""
        if not self.dead and not self.at_boundary:
            self.dead = True
            raise MuxError(f"carrier ended inside a frame ({self.buffered} bytes buffered)")


# -- writing ---------------------------------------------------------------------------

def encode_address(dest: Destination) -> bytes:
    """Port, then address type and address (Mux.Cool's order)."""
    key = (dest.host, dest.port)
    encoded = _ADDRESSES.get(key)
    if encoded is None:
        encoded = _encode_address(dest)
        if len(_ADDRESSES) >= _ADDRESS_CACHE:
            _ADDRESSES.clear()
        _ADDRESSES[key] = encoded
    return encoded


#: encode_address's results by (host, port): a client's New frames mostly go to a few
#: destinations (cleared whole when full)
_ADDRESSES: dict[tuple[str, int], bytes] = {}
_ADDRESS_CACHE = 4096
_NEW_HEAD = struct.Struct(">HHBBB")  # metaLen, id, New, option, network


def _encode_address(dest: Destination) -> bytes:
    ip = dest.ip
    port = _HEAD.pack(dest.port)
    if isinstance(ip, ipaddress.IPv4Address):
        return port + bytes([ATYP_IPV4]) + ip.packed
    if isinstance(ip, ipaddress.IPv6Address):
        return port + bytes([ATYP_IPV6]) + ip.packed
    host = dest.host.encode("ascii")
    if not 0 < len(host) <= 255:
        raise ValueError(f"a Mux.Cool frame cannot carry the domain {dest.host!r}")
    return port + bytes([ATYP_DOMAIN, len(host)]) + host


def encode_new(session_id: int, target: Destination, data: bytes | memoryview | None = None,
               global_id: bytes | None = None) -> bytes:
    """A New frame for ``target`` (with its first data when ``data`` is not None)."""
    address = _ADDRESSES.get((target.host, target.port)) or encode_address(target)
    if global_id:
        address += global_id
    head = _NEW_HEAD.pack(5 + len(address), session_id, NEW,
                          OPT_DATA if data is not None else 0,
                          NET_UDP if target.network == "udp" else NET_TCP)
    if data is None:
        return head + address
    return b"".join((head, address, _HEAD.pack(len(data)), data))


def encode_keep(session_id: int, data: bytes | memoryview,
                address: Destination | None = None) -> list[bytes | memoryview]:
    """A Keep frame carrying ``data`` (at most 65535 bytes) as pieces to write in order;
    ``address``: Xray's UDP form (the datagram's source/destination in the metadata)."""
    if address is None:
        return [_KEEP_HEAD.pack(4, session_id, KEEP, OPT_DATA, len(data)), data]
    meta = _HEAD.pack(session_id) + bytes([KEEP, OPT_DATA, NET_UDP]) + encode_address(address)
    return [_HEAD.pack(len(meta)) + meta + _HEAD.pack(len(data)), data]


def split_stream(session_id: int, data: bytes | memoryview,
                 size: int = MAX_TCP_DATA) -> list[bytes | memoryview]:
    """Keep frames of at most ``size`` bytes each carrying the stream bytes ``data``."""
    view = memoryview(data)
    n = len(view)
    if n <= size:
        return [_KEEP_HEAD.pack(4, session_id, KEEP, OPT_DATA, n), view]
    pieces: list[bytes | memoryview] = []
    for at in range(0, n, size):
        part = view[at:at + size]
        pieces.append(_KEEP_HEAD.pack(4, session_id, KEEP, OPT_DATA, len(part)))
        pieces.append(part)
    return pieces


def encode_end(session_id: int, error: bool = False) -> bytes:
    """An End frame (``error``: the Error bit, the session failed)."""
    return _META4.pack(4, session_id, END, OPT_ERROR if error else 0)


def encode_keepalive() -> bytes:
    """A KeepAlive frame (id 0, no data)."""
    return _META4.pack(4, 0, KEEPALIVE, 0)
