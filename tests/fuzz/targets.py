"""Fuzz targets: every sans-IO codec (and the WebSocket server layer) fed arbitrary bytes.

A :class:`Target` is ``run(data, cut)``: the bytes go into the codec in two reads split at
``cut`` (modulo the length), and the only exception that may leave it is one of ``allowed``
(the codec's own error type). ``seeds()`` gives well-formed inputs (from the test vectors or
built with the codec's encoder) that the mutators start from. Encrypted protocols are fuzzed
*inside* their envelope too (the fuzzed plaintext is sealed with a known key), so the parser
behind the authentication sees the arbitrary bytes, not only the tag check.

Both the suite (:mod:`tests.test_fuzz`, bounded hypothesis runs) and the long runs
(``python -m tests.fuzz TARGET --minutes N``) use these targets.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

from vtwist.address import Destination
from vtwist.sansio import NEED_DATA

_VECTORS = Path(__file__).resolve().parent.parent / "vectors"
_SHARED = Path(__file__).resolve().parents[3] / "shared" / "protocol"

NOW = 1_700_000_000.0
UUID = bytes.fromhex("b831381d63244d53ad4f8cda48b30811")


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``run(data, cut)`` may raise only ``allowed``."""

    name: str
    run: Callable[[bytes, int], None]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]


TARGETS: dict[str, Target] = {}


def target(name: str, allowed: tuple[type[BaseException], ...] = (),
           seeds: Callable[[], list[bytes]] = lambda: []) -> Callable:
    """Register ``fn(data, cut)`` as the target ``name``."""
    def register(fn: Callable[[bytes, int], None]) -> Callable[[bytes, int], None]:
        TARGETS[name] = Target(name, fn, allowed, seeds)
        return fn
    return register


def split(data: bytes, cut: int) -> tuple[bytes, bytes]:
    """``data`` in two parts at ``cut`` (modulo its length + 1)."""
    at = cut % (len(data) + 1)
    return data[:at], data[at:]


@cache
def _vectors(name: str) -> dict:
    for folder in (_VECTORS, _SHARED):
        path = folder / f"{name}-vectors.json"
        if path.exists():
            return json.loads(path.read_text())
    return {}


# -- SOCKS -----------------------------------------------------------------------------------
def _socks_seeds() -> list[bytes]:
    from vtwist.proxy.socks import codec as C
    return [
        C.client_greeting() + C.client_request(C.CMD_CONNECT, "example.com", 443),
        C.client_greeting((2,)) + C.client_credentials(b"user", b"pass")
        + C.client_request(C.CMD_UDP_ASSOCIATE, "1.2.3.4", 53),
        C.client_greeting() + C.client_request(C.CMD_CONNECT, "2001:db8::1", 80) + b"GET /",
        C.client_request4(C.CMD_CONNECT, "1.2.3.4", 80, b"id"),
        b"\x04\x01\x00\x50\x00\x00\x00\x01id\x00example.com\x00",
    ]


@target("socks", seeds=_socks_seeds)
def socks(data: bytes, cut: int) -> None:
    """The SOCKS 4/4a/5 server handshake, then the server's reply to what it parsed."""
    from vtwist.proxy.socks import codec as C
    for allow4 in (True, False):
        codec = C.ServerCodec(allow_socks4=allow4)
        try:
            for part in split(data, cut):
                for event in codec.receive_data(part):
                    if isinstance(event, C.Greeting):
                        codec.send(C.MethodChoice(event.methods[0] if event.methods else 0))
                    elif isinstance(event, C.Credentials):
                        codec.send(C.AuthResult(True))
                    elif isinstance(event, C.Request):
                        event.destination  # noqa: B018 - it must be buildable
                        codec.send(C.Reply(C.ReplyCode.SUCCEEDED))
        except C.ProtocolError:
            pass
        except C.LocalProtocolError:  # a reply the state does not allow: ours, not the input's
            pass


@target("socks-datagram", allowed=(), seeds=lambda: [
    __import__("vtwist.proxy.socks.codec", fromlist=["x"]).build_datagram("a.b", 53, b"q"),
    __import__("vtwist.proxy.socks.codec", fromlist=["x"]).build_datagram("::1", 1, b"")])
def socks_datagram(data: bytes, cut: int) -> None:
    """A SOCKS5 UDP datagram; the client's replies (5 and 4)."""
    from vtwist.proxy.socks import codec as C
    for fn in (C.parse_datagram, C.parse_reply, C.parse_reply4):
        try:
            fn(data)
        except (C.ProtocolError, C.AddressError):
            pass


# -- HTTP ------------------------------------------------------------------------------------
def _http_seeds() -> list[bytes]:
    return [
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
        b"Proxy-Authorization: Basic dTpw\r\n\r\nhello",
        b"GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive"
        b"\r\nContent-Length: 3\r\n\r\nabcGET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST http://h:8080/ HTTP/1.1\r\nHost: h:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: [::1]:80\r\n\r\n",
    ]


@target("http", seeds=_http_seeds)
def http(data: bytes, cut: int) -> None:
    """The HTTP proxy's request parsing (h11): requests, bodies, pipelining, EOF."""
    from vtwist.proxy.http import codec as C
    for transparent in (False, True):
        codec = C.ServerCodec(allow_transparent=transparent, max_head=4096)
        try:
            for part in (*split(data, cut), b""):
                for event in codec.receive_data(part):
                    if isinstance(event, C.ProxyRequest):
                        event.destination  # noqa: B018
        except C.HttpError:
            pass


@target("http-response", seeds=lambda: [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    b"HTTP/1.0 404 Not Found\r\n\r\nno"])
def http_response(data: bytes, cut: int) -> None:
    """The HTTP inbound's reading of the origin's response (plain proxy requests)."""
    from vtwist.proxy.http import codec as C
    request = C.ProxyRequest(method=b"GET", target=b"http://example.com/", http_version=b"1.1",
                             headers=[(b"Host", b"example.com")],
                             destination=Destination.tcp("example.com", 80), connect=False,
                             credentials=None, path=b"/", host=b"example.com")
    codec = C.UpstreamCodec(request, max_head=4096)
    codec.start()
    codec.end_body()
    try:
        for part in (*split(data, cut), b""):
            codec.receive_data(part)
    except C.HttpError:
        pass


# -- VMess -----------------------------------------------------------------------------------
def _vmess_instruction_seeds() -> list[bytes]:
    seeds = []
    for v in _vectors("vmess").get("vectors", []):
        plain = v.get("outputs", {}).get("header_plaintext")
        if isinstance(plain, str):
            seeds.append(bytes.fromhex(plain))
    return seeds


def _fix_checksum(data: bytes) -> bytes:
    """``data`` with its last four bytes replaced by the FNV-1a of the rest (VMess's
    checksum), so the parser goes past the checksum."""
    from vtwist.proxy.vmess.header import fnv1a_32
    body = data[:-4] if len(data) > 4 else data
    return body + struct.pack(">I", fnv1a_32(body))


@target("vmess-instruction", allowed=(), seeds=_vmess_instruction_seeds)
def vmess_instruction(data: bytes, cut: int) -> None:
    """The decrypted request instruction (with a correct checksum), the response header and
    its commands."""
    from vtwist.proxy.vmess import header as H
    for plain in (data, _fix_checksum(data)):
        try:
            need = H.instruction_needed(plain)
            if need <= len(plain) and H.checksum_ok(plain[:need]):
                H.parse_instruction(plain[:need])
        except H.HeaderError:
            pass
    try:
        H.parse_response_plain(data)
    except H.HeaderError:
        pass
    if data:
        try:
            H.parse_command(data[0], data[1:])
        except H.HeaderError:
            pass


@target("vmess-handshake", allowed=(), seeds=_vmess_instruction_seeds)
def vmess_handshake(data: bytes, cut: int) -> None:
    """The server handshake: raw bytes (a prober), and the bytes as the instruction inside
    a correctly sealed AEAD header of a known user (checksum fixed)."""
    from vtwist.proxy.vmess.handshake import ServerHandshake
    from vtwist.proxy.vmess.header import seal_request_header
    from vtwist.proxy.vmess.replay import AuthIDFilter, SessionHistory
    from vtwist.proxy.vmess.users import Account, UserTable
    account = Account(UUID)
    users = UserTable([account, Account(UUID[::-1], alter_id=4)])
    sealed = seal_request_header(account.cmd_key, _fix_checksum(data), int(NOW))
    for wire in (data, sealed, sealed[:34] + data):
        hs = ServerHandshake(users, AuthIDFilter(), SessionHistory())
        for part in split(wire, cut):
            verdict = hs.feed(part, NOW)
            if verdict is not NEED_DATA:
                break


def _vmess_body_seeds() -> list[bytes]:
    out = []
    for v in _vectors("vmess").get("vectors", []):
        body = v.get("outputs", {}).get("request_body")
        if isinstance(body, dict):
            wire = body.get("wire_hex") or body.get("wire")
            if isinstance(wire, str):
                out.append(bytes.fromhex(wire)[:4096])
            for chunk in body.get("chunks", [])[:3]:
                for key in ("wire_hex", "wire", "sealed"):
                    if isinstance(chunk.get(key), str):
                        out.append(bytes.fromhex(chunk[key])[:4096])
    return out or [b"\x00\x05hello\x00\x00"]


@target("vmess-body", seeds=_vmess_body_seeds)
def vmess_body(data: bytes, cut: int) -> None:
    """Body chunks for every security and option combination, stream and packet mode."""
    from vtwist.proxy.vmess import body as B
    key, iv = bytes(range(16)), bytes(range(16, 32))
    for security, option in ((5, 1), (5, 5), (5, 0x0D), (3, 5), (3, 0x0D), (4, 5), (4, 0x0D),
                             (1, 1), (1, 0), (5, 0)):
        for packet in (False, True):
            try:
                dec = B.BodyDecoder(security, option, key, iv, packet=packet)
            except B.BodyError:
                continue
            try:
                for part in split(data, cut):
                    dec.feed(part)
            except B.BodyError:
                pass


# -- VLESS -----------------------------------------------------------------------------------
def _vless_seeds() -> list[bytes]:
    from vtwist.proxy.vless import codec as C
    return [
        C.encode_request(UUID, C.CMD_TCP, Destination.tcp("example.com", 443)) + b"hi",
        C.encode_request(UUID, C.CMD_UDP, Destination.udp("1.2.3.4", 53)),
        C.encode_request(UUID, C.CMD_MUX, None),
        C.encode_request(UUID, C.CMD_TCP, Destination.tcp("2001:db8::1", 80),
                         C.Addons("xtls-rprx-direct", b"\x01\x02")),
    ]


@target("vless", seeds=_vless_seeds)
def vless(data: bytes, cut: int) -> None:
    """The request (known and unknown users), addons, the response, UDP packet framing."""
    from vtwist.proxy.vless import codec as C
    for wire in (data, bytes([0]) + UUID + data[17:] if len(data) > 17 else data):
        parser = C.RequestParser(lambda u: "acct" if u == UUID else None)
        try:
            for part in split(wire, cut):
                if parser.feed(part) is not NEED_DATA:
                    break
        except C.VLESSError:
            pass
    for step in (C.decode_addons, lambda d: C.ResponseParser().feed(d),
                 lambda d: [C.PacketDecoder().feed(p) for p in split(d, cut)]):
        try:
            step(data)
        except C.VLESSError:
            pass


# -- Trojan ----------------------------------------------------------------------------------
def _trojan_seeds() -> list[bytes]:
    from vtwist.proxy.trojan import codec as C
    key = C.password_key("password")
    return [
        C.encode_request(key, C.CMD_TCP, Destination.tcp("example.com", 443)) + b"GET /",
        C.encode_request(key, C.CMD_UDP, Destination.udp("1.2.3.4", 53))
        + C.encode_packet(Destination.udp("1.2.3.4", 53), b"query"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ]


@target("trojan", seeds=_trojan_seeds)
def trojan(data: bytes, cut: int) -> None:
    """The server's first read (a user's request, a fallback, a malformed one), the raw
    request parser, and UDP packet framing."""
    from vtwist.proxy.trojan import codec as C
    key = C.password_key("password")
    for wire in (data, key + data[56:] if len(data) > 56 else data):
        reader = C.RequestReader({key: "user"})
        try:
            for part in split(wire, cut):
                if reader.feed(part) is not NEED_DATA:
                    break
        except C.TrojanError:
            pass
    for step in (C.parse_request, lambda d: [C.PacketDecoder().feed(p) for p in split(d, cut)]):
        try:
            step(data)
        except C.TrojanError:
            pass


# -- Shadowsocks -----------------------------------------------------------------------------
_SS_METHODS = ("aes-128-gcm", "chacha20-poly1305", "none")


@cache
def _ss_account(method: str):  # noqa: ANN202 - an Account
    from vtwist.proxy.shadowsocks.aead import Account
    return Account.from_password(method, "password")


def _ss_seeds() -> list[bytes]:
    from vtwist.proxy.shadowsocks import codec as C
    return [C.encode_address(Destination.tcp("example.com", 443)) + b"hello",
            C.encode_address(Destination.tcp("1.2.3.4", 80)),
            C.encode_address(Destination.tcp("2001:db8::1", 80)) + b"x" * 40]


@target("shadowsocks", seeds=_ss_seeds)
def shadowsocks(data: bytes, cut: int) -> None:
    """The server handshake over raw bytes (a prober) and over a correctly sealed stream
    whose plaintext is the fuzz input (address parsing); UDP packets both ways."""
    from vtwist.proxy.shadowsocks import aead as A
    from vtwist.proxy.shadowsocks import codec as C
    from vtwist.proxy.shadowsocks.replay import SaltFilter
    for method in _SS_METHODS:
        account = _ss_account(method)
        sealed = b"".join(A.StreamEncoder(account).encode(data)) if data else b""
        for wire in (data, sealed):
            hs = C.ServerHandshake(account, SaltFilter())
            try:
                for part in split(wire, cut):
                    if hs.feed(part) is not NEED_DATA:
                        break
            except (C.RequestError, A.CipherError):
                pass
        for packet in (data, A.seal_packet(account, data)):
            try:
                C.decode_packet(account, packet)
            except (C.RequestError, A.CipherError):
                pass


@target("shadowsocks-stream", seeds=lambda: [b"\x00" * 32 + b"\x00\x10" + b"\x00" * 16])
def shadowsocks_stream(data: bytes, cut: int) -> None:
    """The AEAD stream decoder on raw bytes (lengths behind a bad tag never drive it)."""
    from vtwist.proxy.shadowsocks import aead as A
    for method in _SS_METHODS:
        dec = A.StreamDecoder(_ss_account(method))
        try:
            for part in split(data, cut):
                dec.feed(part)
        except A.CipherError:
            pass


# -- Mux.Cool --------------------------------------------------------------------------------
def _mux_seeds() -> list[bytes]:
    seeds = [bytes.fromhex(v["hex"]) for v in _vectors("mux").get("vectors", [])
             if isinstance(v.get("hex"), str)]
    return seeds or [b"\x00\x04\x00\x00\x00\x04"]


@target("mux", seeds=_mux_seeds)
def mux(data: bytes, cut: int) -> None:
    """Mux.Cool frames, split anywhere, then the end of the stream."""
    from vtwist.proxy.mux import frame as F
    dec = F.FrameDecoder()
    try:
        for part in split(data, cut):
            dec.feed(part)
        dec.end()
    except F.MuxError:
        pass
    try:
        F.parse_metadata(data)
    except F.MuxError:
        pass


# -- mKCP ------------------------------------------------------------------------------------
def _kcp_seeds() -> list[bytes]:
    vectors = _vectors("mkcp")
    out = [bytes.fromhex(s["plain_hex"]) for s in vectors.get("segments", [])
           if isinstance(s.get("plain_hex"), str)]
    multi = vectors.get("multi_segment_datagram", {})
    if isinstance(multi, dict) and isinstance(multi.get("plain_hex"), str):
        out.append(bytes.fromhex(multi["plain_hex"]))
    return out or [b"\x12\x34\x01\x00" + bytes(15)]


@target("kcp", seeds=_kcp_seeds)
def kcp(data: bytes, cut: int) -> None:
    """mKCP: segments from a plaintext, and datagrams through every header and envelope
    (no seed, a seed): raw (a flood) and correctly sealed around the fuzz input."""
    from vtwist.transport.kcp.crypt import make_authenticator
    from vtwist.transport.kcp.obfs import HEADER_TYPES, make_header
    from vtwist.transport.kcp.segment import parse_segments
    from vtwist.transport.kcp.session import Packer
    for seg in parse_segments(data):
        seg.encode()
    for header in HEADER_TYPES:
        for seed in (None, "seed"):
            packer = Packer(make_header(header), make_authenticator(seed))
            for datagram in (data, packer.pack(data)):
                plain = packer.unpack(datagram)
                if plain is not None:
                    parse_segments(plain)


# -- sniffers --------------------------------------------------------------------------------
def _tls_seeds() -> list[bytes]:
    captures = _vectors("mkcp")  # no TLS vectors on file: build a ClientHello with the ssl module
    del captures
    return [_client_hello("example.com"), _client_hello("a" * 60 + "." + "b" * 60 + ".example")]


@cache
def _client_hello(name: str) -> bytes:
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    conn = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        conn.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


@target("sniff", seeds=lambda: [*_tls_seeds(), b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
                                b"\x13BitTorrent protocol" + bytes(48)])
def sniff(data: bytes, cut: int) -> None:
    """The TLS ClientHello, HTTP and BitTorrent sniffers, on every prefix length chosen."""
    from vtwist.tunnel.sniff.bittorrent import sniff_bittorrent
    from vtwist.tunnel.sniff.http import sniff_http
    from vtwist.tunnel.sniff.tls import server_name, sniff_tls
    for prefix in split(data, cut)[:1] + (data,):
        sniff_tls(prefix)
        sniff_http(prefix)
        sniff_bittorrent(prefix)
    server_name(data)


# -- WebSocket (the server layer, over a StringTransport) -------------------------------------
def _ws_seeds() -> list[bytes]:
    upgrade = (b"GET /ws HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"Sec-WebSocket-Version: 13\r\n\r\n")
    mask = b"\x01\x02\x03\x04\x01"
    frame = b"\x82\x85" + mask[:4] + bytes(b ^ m for b, m in zip(b"hello", mask, strict=True))
    return [upgrade + frame, upgrade + b"\x88\x82\x00\x00\x00\x00\x03\xe8",
            upgrade.replace(b"/ws", b"/ws?ed=2048") + b"\x89\x80\x00\x00\x00\x00"]


@target("ws", seeds=_ws_seeds)
def ws(data: bytes, cut: int) -> None:
    """The WebSocket server layer: upgrade request, early data, frames; it answers or closes,
    never raises."""
    from twisted.internet.protocol import Factory, Protocol
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from vtwist.transport.ws.http import decode_early_data
    from vtwist.transport.ws.layer import WSServerLayer
    from vtwist.transport.ws.settings import WSSettings
    clock = Clock()
    layer = WSServerLayer(Factory.forProtocol(Protocol), WSSettings(path="/ws"), clock)
    layer.makeConnection(StringTransport())
    for part in split(data, cut):
        layer.dataReceived(part)
    clock.advance(10)
    layer.connectionLost(__import__("twisted.python.failure", fromlist=["Failure"]).Failure(
        __import__("twisted.internet.error", fromlist=["x"]).ConnectionDone()))
    decode_early_data(data)


# -- gRPC ------------------------------------------------------------------------------------
def _grpc_seeds() -> list[bytes]:
    from vtwist.transport.grpc import framing as G
    return [G.hunk_message(b"hello"), G.multi_hunk_message([b"a", b"bc", b""]),
            G.frame_message(G.encode_bytes_field(1, b"x" * 300))]


@target("grpc", seeds=_grpc_seeds)
def grpc(data: bytes, cut: int) -> None:
    """gRPC length-prefixed messages, then protobuf fields, Hunk and MultiHunk."""
    from vtwist.transport.grpc import framing as G
    dec = G.MessageDecoder(max_message=1 << 16)
    messages = []
    try:
        for part in split(data, cut):
            messages += dec.feed(part)
    except G.FramingError:
        pass
    for message in [*messages, data]:
        for fn in (G.decode_hunk, G.decode_multi_hunk, lambda m: list(G.iter_fields(m))):
            try:
                fn(message)
            except G.FramingError:
                pass


# -- geodata ---------------------------------------------------------------------------------
def _geo_seeds() -> list[bytes]:
    from vtwist.routing.geodata import wire as W
    ip = W.encode_geoip("CN", W.encode_cidr(bytes([1, 2, 3, 0]), 24)
                        + W.encode_cidr(bytes(16), 0))
    site = W.encode_geosite("google", W.encode_domain(2, "google.com", ("ads",))
                            + W.encode_domain(3, "www.example.com"))
    return [ip + ip.replace(b"CN", b"US"), site]


@target("geodata", seeds=_geo_seeds)
def geodata(data: bytes, cut: int) -> None:
    """geoip.dat / geosite.dat readers: the index, then every entry as both kinds."""
    from vtwist.routing.geodata import wire as W
    from vtwist.routing.geodata.build import geoip_set
    try:
        entries = W.index(data, len(data))
    except W.GeoDataError:
        return
    for entry in entries.values():
        for fn in (W.geoip_ranges, W.geosite_domains, geoip_set, _geosite_as_loaded):
            try:
                fn(data, entry)
            except W.GeoDataError:
                pass


def _geosite_as_loaded(data: bytes, entry: object) -> None:
    """geosite_matcher as the asset loader calls it: a regexp Python cannot compile is
    skipped and reported, not raised (a 10-minute run found that the bare call raises
    re.error for one, which is that function's documented behaviour without ``skipped``)."""
    from vtwist.routing.geodata.build import geosite_matcher

    geosite_matcher(data, entry, (), [])


# -- smaller codecs --------------------------------------------------------------------------
@target("misc", seeds=lambda: [b"\x00\x01", b"GET /path HTTP/1.1\r\nHost: a\r\n\r\n"])
def misc(data: bytes, cut: int) -> None:
    """The reverse proxy's control frame, QUIC's packet envelope, the tcp HTTP header's
    request path."""
    from vtwist.app.reverse.control import ControlError, decode_control
    from vtwist.transport.tcp.header import request_path
    try:
        decode_control(data)
    except ControlError:
        pass
    request_path(data)
    for codec in _quic_codecs():
        codec.open(data)
        sealed = codec.seal(data)
        codec.open(sealed[: cut % (len(sealed) + 1)])


@lru_cache(maxsize=1)
def _quic_codecs() -> list:
    from vtwist.transport.kcp.obfs import HEADER_TYPES
    from vtwist.transport.quic.packet import PacketCodec
    from vtwist.transport.quic.settings import QUICSettings
    return [PacketCodec(QUICSettings(security=security, key="k", header_type=header))
            for security in ("none", "aes-128-gcm", "chacha20-poly1305")
            for header in HEADER_TYPES]


# -- codecs that landed with the DNS, h2/grpc and outbound work -------------------------------
def _dns_seeds() -> list[bytes]:
    from vtwist.dns.message import build_query, parse_message
    from vtwist.proxy.dns.outbound import answer_query
    query = build_query("example.com", 1, 0x1234)
    return [query, build_query("a.b.example", 28, 7, "1.2.3.4"),
            answer_query(parse_message(query), ["1.2.3.4", "5.6.7.8"], 0)]


@target("dns", seeds=_dns_seeds)
def dns_message(data: bytes, cut: int) -> None:
    """DNS messages: a query the dns outbound reads, an answer the resolver reads (CNAME
    chains, truncation, wrong IDs)."""
    from vtwist.dns.message import BadAnswer, parse_answer, parse_message
    try:
        parse_message(data)
    except BadAnswer:
        pass
    for qtype in (1, 28):
        try:
            parse_answer(data, 0x1234, "example.com", qtype)
        except BadAnswer:
            pass


@target("h2-grpc-profiles", seeds=_grpc_seeds)
def h2_grpc_profiles(data: bytes, cut: int) -> None:
    """The gun tunnel's codec (Hunk and MultiHunk), stream data split anywhere."""
    from vtwist.transport.grpc.framing import FramingError
    from vtwist.transport.grpc.profile import GunCodec
    for multi in (False, True):
        codec = GunCodec(multi)
        try:
            for part in split(data, cut):
                codec.decode(part)
        except FramingError:
            pass


@target("outbound-replies", seeds=lambda: [
    b"\x05\x00\x05\x00\x00\x01\x7f\x00\x00\x01\x00\x50hello",
    b"\x05\x02\x01\x00\x05\x00\x00\x03\x0bexample.com\x01\xbb",
    b"HTTP/1.1 200 Connection established\r\n\r\nhello",
    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"])
def outbound_replies(data: bytes, cut: int) -> None:
    """What the socks and http outbounds read from an upstream proxy."""
    from vtwist.proxy.http.client_codec import ConnectClient, ConnectError
    from vtwist.proxy.socks import codec as S
    from vtwist.proxy.socks.client_codec import ClientCodec
    socks = ClientCodec()
    socks.send(S.Greeting((0, 2)))
    try:
        for part in split(data, cut):
            socks.receive_data(part)
            while True:
                event = socks.next_event()
                if event is NEED_DATA:
                    break
                if isinstance(event, S.MethodChoice):
                    socks.send(S.Credentials(b"u", b"p") if event.method == 2 else
                               S.Request(5, S.CMD_CONNECT, "example.com", 443))
                elif isinstance(event, S.AuthResult):
                    socks.send(S.Request(5, S.CMD_CONNECT, "example.com", 443))
                else:
                    break
    except (S.ProtocolError, S.LocalProtocolError):
        pass
    http = ConnectClient("example.com:443", ("u", "p"))
    http.request()
    try:
        for part in (*split(data, cut), b""):
            if http.receive_data(part) is not NEED_DATA:
                break
    except ConnectError:
        pass
