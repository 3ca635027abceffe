"""DNS queries and answers on the wire, with Twisted's own codec (``twisted.names.dns``).

:func:`build_query` makes an A or AAAA query (with an EDNS Client Subnet option when a
client IP is given, as V2Ray 4.34: /24 for IPv4, /96 for IPv6); :func:`parse_answer` reads
an answer back and checks that it answers that query. Anything that is not such an answer
raises :class:`BadAnswer` (the caller drops or counts it): no codec exception escapes.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from twisted.names import dns

#: Query types the internal DNS answers itself.
A, AAAA = dns.A, dns.AAAA
#: Response codes.
NOERROR, SERVFAIL, NXDOMAIN, REFUSED = dns.OK, dns.ESERVER, dns.ENAME, dns.EREFUSED
#: TTL used when an answer carries 0 (V2Ray: 600 s) and for empty / negative answers.
DEFAULT_TTL = 600
NEGATIVE_TTL = 60
#: Longest answer read over UDP and TCP (a DNS message is at most 65535 bytes).
MAX_MESSAGE = 65535


class BadAnswer(Exception):
    """A message that is not a well-formed answer to the query sent."""


@dataclass(frozen=True)
class Answer:
    """What one query gave: the response code, the addresses, the TTL to cache them for,
    and whether the server truncated the answer (retry over TCP)."""

    rcode: int
    ips: tuple[str, ...] = ()
    ttl: int = DEFAULT_TTL
    truncated: bool = False


def encode_name(name: str) -> bytes:
    """A domain as DNS wire bytes (IDNA for non-ASCII labels); raises BadAnswer if it is
    not a valid name."""
    try:
        raw = name.rstrip(".").encode("idna")
    except UnicodeError as e:
        raise BadAnswer(f"invalid name {name!r}: {e}") from None
    if not raw or len(raw) > 253 or any(not 0 < len(label) < 64 for label in raw.split(b".")):
        raise BadAnswer(f"invalid name {name!r}")
    return raw


def ecs_option(client_ip: str) -> bytes:
    """The EDNS Client Subnet option (code 8) for ``client_ip``."""
    ip = ipaddress.ip_address(client_ip)
    family, bits = (1, 24) if ip.version == 4 else (2, 96)
    address = ip.packed[:(bits + 7) // 8]
    body = struct.pack("!HBB", family, bits, 0) + address
    return struct.pack("!HH", 8, len(body)) + body


def build_query(name: str, qtype: int, query_id: int, client_ip: str | None = None) -> bytes:
    """An A/AAAA query for ``name`` (recursion desired), ID ``query_id``."""
    message = dns.Message(id=query_id, recDes=1)
    message.queries = [dns.Query(encode_name(name), qtype, dns.IN)]
    if client_ip:
        # An OPT pseudo-record: class = UDP payload size, TTL = extended rcode/flags.
        message.additional = [dns.RRHeader(b"", dns.OPT, 1232, 0,
                                           dns.UnknownRecord(ecs_option(client_ip)))]
    return bytes(message.toStr())


def parse_message(data: bytes) -> dns.Message:
    """Decode a DNS message; BadAnswer if it is malformed."""
    if len(data) > MAX_MESSAGE:
        raise BadAnswer(f"oversized message ({len(data)} bytes)")
    if len(data) < 12:
        raise BadAnswer(f"short message ({len(data)} bytes)")
    message = dns.Message()
    try:
        message.fromStr(data)
    except Exception as e:  # noqa: BLE001 - the codec raises EOFError, struct.error, ValueError…
        raise BadAnswer(f"malformed message: {type(e).__name__}") from None
    counts = struct.unpack("!4H", data[4:12])
    parsed = (len(message.queries), len(message.answers), len(message.authority),
              len(message.additional))
    if parsed != counts and not message.trunc:  # the codec stops quietly at the end
        raise BadAnswer("malformed message: truncated records")
    return message


def message_id(data: bytes) -> int | None:
    """The ID of a raw message (None if it is too short to have one)."""
    return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None


def parse_answer(data: bytes, query_id: int, name: str, qtype: int) -> Answer:
    """Read the answer to query ``query_id`` for ``name``/``qtype``.

    Follows the CNAME chain from ``name``; the TTL is the smallest along it.
    """
    message = parse_message(data)
    if message.id != query_id:
        raise BadAnswer(f"wrong ID {message.id} (expected {query_id})")
    if not message.answer:
        raise BadAnswer("a query, not an answer")
    if message.queries:
        q = message.queries[0]
        if q.type != qtype or q.name.name.lower().rstrip(b".") != encode_name(name).lower():
            raise BadAnswer("answer for another question")
    if message.trunc:
        return Answer(message.rCode, truncated=True)
    if message.rCode != NOERROR:
        return Answer(message.rCode, ttl=NEGATIVE_TTL)
    wanted = {encode_name(name).lower()}
    ips: list[str] = []
    ttl: int | None = None
    records = list(message.answers)
    for _ in range(16):  # CNAME chains: each pass may add the next name
        grew = False
        for rr in records:
            owner = rr.name.name.lower().rstrip(b".")
            if owner not in wanted:
                continue
            if rr.type == dns.CNAME:
                target = rr.payload.name.name.lower().rstrip(b".")
                if target not in wanted:
                    wanted.add(target)
                    grew = True
                    ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
            elif rr.type == qtype == dns.A:
                ips.append(ipaddress.IPv4Address(rr.payload.address).compressed)
                ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
            elif rr.type == qtype == dns.AAAA:
                ips.append(ipaddress.IPv6Address(rr.payload.address).compressed)
                ttl = rr.ttl if ttl is None else min(ttl, rr.ttl)
        if not grew:
            break
        ips.clear()
    unique = tuple(dict.fromkeys(ips))
    if not unique:
        return Answer(NOERROR, ttl=NEGATIVE_TTL)
    return Answer(NOERROR, unique, ttl or DEFAULT_TTL)
