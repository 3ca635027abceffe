"""V2Ray's ``geoip.dat`` / ``geosite.dat`` protobuf wire format, read lazily (sans-IO).

The files are one ``GeoIPList`` / ``GeoSiteList`` message: a repeated field 1 of entries,
each with its ``country_code`` (field 1) and its CIDRs or domains (field 2)::

    GeoIP   {1: country_code, 2: repeated CIDR {1: ip bytes (4 or 16), 2: prefix}}
    GeoSite {1: country_code, 2: repeated Domain {1: type, 2: value, 3: repeated
             Attribute {1: key, 2: bool_value, 3: int_value}}}

:func:`index` walks the top-level entries by their lengths and reads only each entry's
country code, so a 20 MB file costs a few hundred small reads; :func:`geoip_ranges` and
:func:`geosite_domains` then decode one entry. Every function takes any buffer (``bytes``,
``mmap``, ``memoryview``) and offsets into it; nothing here opens a file. Unknown fields are
skipped, as protobuf does (Xray's ``reverse_match``, for one). Damage raises
:class:`GeoDataError` with the offset, never an IndexError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

# Domain.Type values.
PLAIN, REGEX, DOMAIN, FULL = 0, 1, 2, 3
#: Domain.Type -> the routing rule prefix it stands for.
KINDS = {PLAIN: "keyword", REGEX: "regexp", DOMAIN: "domain", FULL: "full"}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class GeoDataError(ValueError):
    """The data is not a valid GeoIPList / GeoSiteList (truncated or damaged)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one top-level entry's message lies in the buffer: ``buf[start:end]``."""

    code: str
    start: int
    end: int


def _varint(buf: object, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the offset after it."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise GeoDataError(f"truncated varint at byte {pos}")
        b = buf[pos]  # type: ignore[index]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise GeoDataError(f"varint too long at byte {pos}")


def _skip(buf: object, pos: int, end: int, wire: int) -> int:
    """The offset after a field value of wire type ``wire`` starting at ``pos``."""
    if wire == _VARINT:
        return _varint(buf, pos, end)[1]
    if wire == _LEN:
        n, pos = _varint(buf, pos, end)
        pos += n
    elif wire == _I64:
        pos += 8
    elif wire == _I32:
        pos += 4
    else:
        raise GeoDataError(f"unsupported wire type {wire} at byte {pos}")
    if pos > end:
        raise GeoDataError(f"field runs past its message end at byte {end}")
    return pos


def _fields(buf: object, pos: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in ``[pos, end)``.

    For length-delimited fields the value range excludes the length prefix; for others it
    is the raw encoding.
    """
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise GeoDataError(f"field number 0 at byte {pos}")
        if wire == _LEN:
            n, start = _varint(buf, pos, end)
            pos = start + n
            if pos > end:
                raise GeoDataError(f"field {number} at byte {start} runs past the end "
                                   f"({pos} > {end}): truncated or damaged")
            yield number, wire, start, pos
        else:
            start = pos
            pos = _skip(buf, pos, end, wire)
            yield number, wire, start, pos


def _text(buf: object, start: int, end: int) -> str:
    try:
        return bytes(buf[start:end]).decode("utf-8")  # type: ignore[index]
    except UnicodeDecodeError:
        raise GeoDataError(f"invalid UTF-8 string at byte {start}") from None


def index(buf: object, size: int) -> dict[str, Entry]:
    """The entries of a GeoIPList / GeoSiteList by lower-cased country code.

    Reads only the entries' headers and codes. As V2Ray (first match wins), a code that
    appears twice keeps its first entry.
    """
    entries: dict[str, Entry] = {}
    for number, wire, start, end in _fields(buf, 0, size):
        if number != 1:
            continue
        if wire != _LEN:
            raise GeoDataError(f"entry at byte {start} is not a message")
        code = ""
        for inner, inner_wire, s, e in _fields(buf, start, end):
            if inner == 1:
                if inner_wire != _LEN:
                    raise GeoDataError(f"country code at byte {s} is not a string")
                code = _text(buf, s, e)
                break
        entries.setdefault(code.lower(), Entry(code, start, end))
    return entries


def geoip_ranges(buf: object, entry: Entry) -> tuple[list[int], list[int]]:
    """The IPv4 and IPv6 CIDRs of one GeoIP entry, unsorted, each packed in one int:
    ``first_address << 8 | host_bits`` (the range is ``first .. first + 2**host_bits - 1``).
    """
    v4: list[int] = []
    v6: list[int] = []
    # Fast path: the usual encodings of a CIDR field, ``12 08 0a 04 <ip4> 10 <prefix>`` and
    # ``12 14 0a 10 <ip16> 10 <prefix>``; anything else goes through the general reader.
    data = bytes(buf[entry.start:entry.end])  # type: ignore[index]
    pos, size, base = 0, len(data), entry.start
    from_bytes = int.from_bytes
    while pos < size:
        if data[pos] == 0x12 and pos + 2 < size:
            length = data[pos + 1]
            if (length == 8 and pos + 10 <= size and data[pos + 2] == 0x0A
                    and data[pos + 3] == 4 and data[pos + 8] == 0x10 and data[pos + 9] <= 32):
                bits = 32 - data[pos + 9]
                v4.append((from_bytes(data[pos + 4:pos + 8], "big") >> bits << bits + 8) | bits)
                pos += 10
                continue
            if (length == 20 and pos + 22 <= size and data[pos + 2] == 0x0A
                    and data[pos + 3] == 16 and data[pos + 20] == 0x10
                    and data[pos + 21] <= 128):
                bits = 128 - data[pos + 21]
                v6.append((from_bytes(data[pos + 4:pos + 20], "big") >> bits << bits + 8) | bits)
                pos += 22
                continue
        pos = _geoip_field(data, pos, size, base, v4, v6)
    return v4, v6


def _geoip_field(data: bytes, pos: int, size: int, base: int, v4: list[int],
                 v6: list[int]) -> int:
    """Read the one GeoIP field at ``pos`` the general way; the offset after it."""
    for number, wire, start, end in _fields(data, pos, size):
        if number != 2:
            return end
        start_in_file = base + start
        if wire != _LEN:
            raise GeoDataError(f"CIDR at byte {start_in_file} is not a message")
        ip = b""
        prefix = 0
        for inner, inner_wire, s, e in _fields(data, start, end):
            if inner == 1 and inner_wire == _LEN:
                ip = data[s:e]
            elif inner == 2 and inner_wire == _VARINT:
                prefix = _varint(data, s, e)[0]
        n = int.from_bytes(ip, "big")
        if len(ip) == 4:
            if prefix > 32:
                raise GeoDataError(f"CIDR at byte {start_in_file}: prefix {prefix} over 32")
            bits = 32 - prefix
            v4.append((n >> bits << bits + 8) | bits)
        elif len(ip) == 16:
            if prefix > 128:
                raise GeoDataError(f"CIDR at byte {start_in_file}: prefix {prefix} over 128")
            bits = 128 - prefix
            v6.append((n >> bits << bits + 8) | bits)
        else:
            raise GeoDataError(f"CIDR at byte {start_in_file}: IP of {len(ip)} bytes "
                               "(expected 4 or 16)")
        return end
    return size


def _attribute_key(buf: object, start: int, end: int) -> str:
    for number, wire, s, e in _fields(buf, start, end):
        if number == 1 and wire == _LEN:
            return _text(buf, s, e).lower()
    return ""


def geosite_domains(buf: object, entry: Entry, attrs: tuple[str, ...] = ()
                    ) -> Iterator[tuple[str, str]]:
    """(kind, value) of each domain of one GeoSite entry; ``kind`` as :data:`KINDS`.

    With ``attrs`` (lower-cased attribute keys), only the domains that carry every one of
    them, as V2Ray's ``geosite:NAME@attr`` filter (a key counts whatever its value).
    """
    for number, wire, start, end in _fields(buf, entry.start, entry.end):
        if number != 2:
            continue
        if wire != _LEN:
            raise GeoDataError(f"domain at byte {start} is not a message")
        kind = PLAIN
        value = ""
        keys: list[str] = []
        for inner, inner_wire, s, e in _fields(buf, start, end):
            if inner == 1 and inner_wire == _VARINT:
                kind = _varint(buf, s, e)[0]
            elif inner == 2 and inner_wire == _LEN:
                value = _text(buf, s, e)
            elif inner == 3 and inner_wire == _LEN and attrs:
                keys.append(_attribute_key(buf, s, e))
        if kind not in KINDS:
            raise GeoDataError(f"domain at byte {start}: unknown type {kind}")
        if attrs and not all(a in keys for a in attrs):
            continue
        yield KINDS[kind], value


# -- writing (the test-data generator and the tests use these) ------------------------------
def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_len(number: int, payload: bytes) -> bytes:
    return _enc_varint(number << 3 | _LEN) + _enc_varint(len(payload)) + payload


def encode_cidr(ip: bytes, prefix: int) -> bytes:
    """One ``CIDR`` message (as field 2 of a GeoIP, key included)."""
    body = _enc_len(1, ip) + (_enc_varint(2 << 3) + _enc_varint(prefix) if prefix else b"")
    return _enc_len(2, body)


def encode_geoip(code: str, cidrs: bytes) -> bytes:
    """One GeoIPList entry (key included) from its code and encoded CIDRs."""
    return _enc_len(1, _enc_len(1, code.encode()) + cidrs)


def encode_domain(kind: int, value: str, attrs: tuple[str, ...] = ()) -> bytes:
    """One ``Domain`` message (as field 2 of a GeoSite, key included); attrs are bools."""
    body = (_enc_varint(1 << 3) + _enc_varint(kind) if kind else b"") + _enc_len(2, value.encode())
    for key in attrs:
        body += _enc_len(3, _enc_len(1, key.encode()) + _enc_varint(2 << 3) + b"\x01")
    return _enc_len(2, body)


def encode_geosite(code: str, domains: bytes) -> bytes:
    """One GeoSiteList entry (key included) from its code and encoded domains."""
    return _enc_len(1, _enc_len(1, code.encode()) + domains)
