"""Vector tests for the mKCP segment codec, envelopes, headers and config sizes."""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from vtwist.transport.kcp import crypt
from vtwist.transport.kcp.config import KCPConfig, buffer_bytes
from vtwist.transport.kcp.obfs import (
    DTLSHeader,
    NoneHeader,
    SRTPHeader,
    UTPHeader,
    WechatVideoHeader,
    WireGuardHeader,
    make_header,
)
from vtwist.transport.kcp.segment import (
    AckSegment,
    CmdSegment,
    DataSegment,
    encode_ack,
    encode_cmd,
    encode_data,
    parse_segments,
)

_HERE = Path(__file__).resolve().parent
VECTORS_PATH = _HERE / "vectors" / "mkcp-vectors.json"
if not VECTORS_PATH.exists():  # pragma: no cover - fall back to the shared reference
    VECTORS_PATH = _HERE.parent.parent / "shared" / "protocol" / "mkcp-vectors.json"
V = json.loads(VECTORS_PATH.read_text())
NONCE = bytes(range(12))


def as_dict(seg) -> dict:
    """The vector JSON shape of a parsed segment."""
    if isinstance(seg, DataSegment):
        return {
            "conv": seg.conv, "kind": "data", "number": seg.number, "option": seg.option,
            "payload_hex": seg.payload.hex(), "sending_next": seg.sending_next,
            "timestamp": seg.timestamp,
        }
    if isinstance(seg, AckSegment):
        return {
            "conv": seg.conv, "kind": "ack", "number_list": list(seg.numbers),
            "option": seg.option, "receiving_next": seg.receiving_next,
            "receiving_window": seg.receiving_window, "timestamp": seg.timestamp,
        }
    assert isinstance(seg, CmdSegment)
    return {
        "cmd": seg.cmd, "conv": seg.conv, "kind": "cmd", "option": seg.option,
        "peer_rto": seg.peer_rto, "receiving_next": seg.receiving_next,
        "sending_next": seg.sending_next,
    }


def encode_inputs(i: dict) -> bytes:
    if i["kind"] == "data":
        return encode_data(i["conv"], i["option"], i["timestamp"], i["number"],
                           i["sending_next"], i["payload_ascii"].encode())
    if i["kind"] == "ack":
        return encode_ack(i["conv"], i["option"], i["receiving_window"], i["receiving_next"],
                          i["timestamp"], i["number_list"])
    return encode_cmd(i["conv"], i["cmd"], i["option"], i["sending_next"], i["receiving_next"],
                      i["peer_rto"])


def seed_auth(seed: str) -> crypt.SeedAuthenticator:
    return crypt.SeedAuthenticator(seed, urandom=lambda n: NONCE[:n])


class SegmentVectorTests(SynchronousTestCase):
    def test_segments(self) -> None:
        simple = crypt.SimpleAuthenticator()
        seeded = seed_auth(V["seed_mode"]["seed"])
        for s in V["segments"]:
            plain = bytes.fromhex(s["plain_hex"])
            self.assertEqual(encode_inputs(s["inputs"]), plain, s["name"])
            self.assertEqual(len(plain), s["plain_len"])
            self.assertEqual(simple.seal(plain).hex(), s["simple_wire_hex"], s["name"])
            self.assertEqual(seeded.seal(plain).hex(), s["seed_wire_hex"], s["name"])
            self.assertEqual(simple.open(bytes.fromhex(s["simple_wire_hex"])), plain)
            self.assertEqual(seeded.open(bytes.fromhex(s["seed_wire_hex"])), plain)
            got = [as_dict(x) for x in parse_segments(plain)]
            self.assertEqual(got, s["simple_parsed"], s["name"])
            self.assertEqual(got, s["seed_parsed"], s["name"])
            self.assertEqual(parse_segments(plain)[0].encode(), plain)

    def test_simple_before_xor(self) -> None:
        from fnv_hash_fast import fnv1a_32

        for s in V["segments"]:
            plain = bytes.fromhex(s["plain_hex"])
            body = len(plain).to_bytes(2, "big") + plain
            self.assertEqual(fnv1a_32(body).to_bytes(4, "big").hex(), s["simple_fnv1a32"])
            self.assertEqual((fnv1a_32(body).to_bytes(4, "big") + body).hex(),
                             s["simple_before_xor_hex"])

    def test_multi_segment_datagram(self) -> None:
        m = V["multi_segment_datagram"]
        plain = bytes.fromhex(m["plain_hex"])
        self.assertEqual(crypt.SimpleAuthenticator().seal(plain).hex(), m["simple_wire_hex"])
        self.assertEqual(seed_auth(V["seed_mode"]["seed"]).seal(plain).hex(), m["seed_wire_hex"])
        got = [as_dict(x) for x in parse_segments(plain)]
        self.assertEqual(got, m["simple_parsed"])
        self.assertEqual(got, m["seed_parsed"])

    def test_parse_behaviour(self) -> None:
        simple = crypt.SimpleAuthenticator()
        for case in V["parse_behaviour"]:
            wire = bytes.fromhex(case["simple_wire_hex"])
            plain = simple.open(wire)
            if "plain_hex" in case:
                self.assertEqual(plain, bytes.fromhex(case["plain_hex"]), case["name"])
                self.assertEqual(simple.seal(plain), wire)
            segs = parse_segments(plain) if plain is not None else []
            self.assertEqual(len(segs), case["segments_accepted"], case["name"])
            if case.get("parsed") is not None:
                self.assertEqual([as_dict(x) for x in segs], case["parsed"], case["name"])

    def test_short_inputs(self) -> None:
        self.assertEqual(parse_segments(b""), [])
        self.assertEqual(parse_segments(b"\x12\x34\x03"), [])
        self.assertIsNone(crypt.SimpleAuthenticator().open(b"\x00" * 6))
        self.assertIsNone(seed_auth("x").open(b"\x00" * 28))


class SeedTests(SynchronousTestCase):
    def test_seed_key(self) -> None:
        sm = V["seed_mode"]
        self.assertEqual(crypt.seed_key(sm["seed"]).hex(), sm["aes128_key_hex"])

    def test_empty_seed_is_a_seed(self) -> None:
        es = V["empty_seed"]
        self.assertEqual(crypt.seed_key("").hex(), es["aes128_key_hex"])
        plain = bytes.fromhex(V["segments"][0]["plain_hex"])
        self.assertEqual(seed_auth("").seal(plain).hex(), es["wire_hex"])
        auth = crypt.make_authenticator("")
        self.assertIsInstance(auth, crypt.SeedAuthenticator)
        self.assertEqual([as_dict(x) for x in parse_segments(
            auth.open(bytes.fromhex(es["wire_hex"])))], es["parsed"])
        self.assertIsInstance(crypt.make_authenticator(None), crypt.SimpleAuthenticator)

    def test_tamper_rejected(self) -> None:
        auth = crypt.make_authenticator("abc")
        wire = bytearray(auth.seal(b"x" * 40))
        wire[20] ^= 1
        self.assertIsNone(auth.open(bytes(wire)))

    def test_simple_tamper_rejected(self) -> None:
        auth = crypt.SimpleAuthenticator()
        wire = auth.seal(bytes(range(37)))
        self.assertEqual(auth.open(wire), bytes(range(37)))
        for i in range(len(wire)):
            bad = bytearray(wire)
            bad[i] ^= 0x40
            self.assertIsNone(auth.open(bytes(bad)), i)
        self.assertIsNone(auth.open(wire[:-1]), "length field must match")
        self.assertIsNone(auth.open(wire + b"\x00"), "length field must match")


class XorChainTests(SynchronousTestCase):
    def test_matches_bytewise_model(self) -> None:
        import random

        rng = random.Random(3)
        for n in list(range(0, 40)) + [1349, 1350, 2000]:
            data = bytes(rng.getrandbits(8) for _ in range(n))
            x = bytearray(data)
            for i in range(4, n):
                x[i] ^= x[i - 4]
            self.assertEqual(crypt._prefix_xor_words(data), bytes(x))
            back = bytearray(x)
            for i in range(n - 1, 3, -1):
                back[i] = x[i] ^ x[i - 4]
            self.assertEqual(crypt._unchain_words(bytes(x)), bytes(back))
            self.assertEqual(bytes(back), data)


class HeaderTests(SynchronousTestCase):
    CLASSES = {"none": NoneHeader, "srtp": SRTPHeader, "utp": UTPHeader,
               "wechat-video": WechatVideoHeader, "dtls": DTLSHeader,
               "wireguard": WireGuardHeader}

    def build(self, name: str, state: dict):
        cls = self.CLASSES[name]
        if name == "srtp":
            return cls(rand=lambda: state["number"])
        if name == "utp":
            return cls(rand=lambda: state["connectionID"])
        if name == "wechat-video":
            return cls(rand=lambda: state["sn"])
        if name == "dtls":
            h = cls(rand=lambda: state["epoch"])
            h.sequence, h.length = state["sequence"], state["length"]
            return h
        return cls()

    def test_headers(self) -> None:
        simple = crypt.SimpleAuthenticator()
        seeded = seed_auth(V["seed_mode"]["seed"])
        plain = bytes.fromhex(V["segments"][0]["plain_hex"])
        for h in V["headers"]:
            name = h["json_type"]
            hdr = self.build(name, h["packets"][0]["state_before"])
            self.assertEqual(hdr.size, h["size"])
            self.assertEqual(make_header(name).size, h["size"])
            for p in h["packets"]:
                hb = hdr.next()
                self.assertEqual(hb.hex(), p["header_hex"], name)
                self.assertEqual((hb + simple.seal(plain)).hex(), p["simple_wire_hex"])
                self.assertEqual((hb + seeded.seal(plain)).hex(), p["seed_wire_hex"])
                for key, auth in (("simple", simple), ("seed", seeded)):
                    wire = bytes.fromhex(p[key + "_wire_hex"])
                    got = parse_segments(auth.open(wire[hdr.size:]))
                    self.assertEqual([as_dict(x) for x in got], p[key + "_parsed"])

    def test_dtls_length_sequence(self) -> None:
        d = V["dtls_length_field_sequence"]
        h = DTLSHeader()
        seen = []
        seqs = []
        for _ in range(len(d["lengths"])):
            b = h.next()
            seen.append(int.from_bytes(b[11:13], "big"))
            seqs.append(int.from_bytes(b[7:11], "big"))
        self.assertEqual(seen, d["lengths"])
        self.assertEqual(seqs[:10], d["sequence_numbers_first_10"])

    def test_unknown_header(self) -> None:
        self.assertRaises(ValueError, make_header, "tls")
        self.assertEqual(make_header(None).size, 0)
        self.assertEqual(make_header("DTLS").size, 13)


class ConfigSizeTests(SynchronousTestCase):
    def test_window_sizes(self) -> None:
        for c in V["window_sizes"]["cases"]:
            base = dict(mtu=c["mtu"], tti=c["tti"], uplink_capacity=c["uplinkCapacity"],
                        downlink_capacity=c["downlinkCapacity"],
                        write_buffer_bytes=c["write_buffer_bytes"],
                        read_buffer_bytes=c["read_buffer_bytes"])
            cfg = KCPConfig(**base)
            self.assertEqual(cfg.sending_in_flight, c["sending_in_flight_size"], c)
            self.assertEqual(cfg.receiving_window, c["receiving_in_flight_size"], c)
            self.assertEqual(cfg.send_buffer_segs, c["sending_buffer_size"], c)
            self.assertEqual(cfg.mss, c["mss_simple_no_header"])
            self.assertEqual(KCPConfig(**base, header_type="dtls").mss, c["mss_simple_dtls"])
            self.assertEqual(KCPConfig(**base, header_type="dtls", seed="s").mss,
                             c["mss_seed_dtls"])

    def test_buffer_bytes(self) -> None:
        self.assertEqual(buffer_bytes(0), 512 * 1024)
        self.assertEqual(buffer_bytes(2), 2 * 1024 * 1024)

    def test_ranges(self) -> None:
        self.assertRaises(ValueError, KCPConfig, mtu=575)
        self.assertRaises(ValueError, KCPConfig, mtu=1461)
        self.assertRaises(ValueError, KCPConfig, tti=9)
        self.assertRaises(ValueError, KCPConfig, tti=101)
        KCPConfig(mtu=576, tti=10)
        KCPConfig(mtu=1460, tti=100)


class RealCaptureTests(SynchronousTestCase):
    def test_decode_captures(self) -> None:
        import hashlib

        for cap in V["real_capture_v2ray_4_34"]["captures"]:
            auth = crypt.make_authenticator(cap["seed"])
            for p in cap["c2s_first"] + cap["s2c_first"]:
                wire = bytes.fromhex(p["wire_hex"])
                self.assertEqual(len(wire), p["len"])
                h = p["dtls_header"]
                self.assertEqual(wire[:3], b"\x17\xfe\xfd")
                self.assertEqual(int.from_bytes(wire[3:5], "big"), h["epoch"])
                self.assertEqual(int.from_bytes(wire[7:11], "big"), h["sequence"])
                self.assertEqual(int.from_bytes(wire[11:13], "big"), h["length_field"])
                segs = parse_segments(auth.open(wire[13:]))
                got = []
                for seg in segs:
                    d = as_dict(seg)
                    if d["kind"] == "data":
                        payload = bytes.fromhex(d.pop("payload_hex"))
                        d["payload_len"] = len(payload)
                        d["payload_sha256"] = hashlib.sha256(payload).hexdigest()
                    got.append(d)
                self.assertEqual(got, p["decoded"])
