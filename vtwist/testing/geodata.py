"""Realistic V2Ray ``geoip.dat`` / ``geosite.dat`` files, generated offline (no network).

``python -m vtwist.testing.geodata DIR [--scale 1.0] [--seed 1]`` writes ``geoip.dat``,
``geosite.dat`` and the ``ext:`` files ``ext-site.dat`` / ``ext-ip.dat`` into DIR. At scale 1
the geoip file is over 10 MB: about 250 countries, about 900,000 IPv4 and 90,000 IPv6 CIDRs
(``us`` about 220,000, ``cn`` about 70,000), disjoint within a country and across countries,
around the special-purpose ranges (``private`` holds those). The geosite file has about
1,000 lists and 150,000 domains: ``cn`` (about 55,000), ``geolocation-cn``,
``geolocation-!cn``, ``category-ads-all``, ``private`` and many small site lists, with
``domain``/``full``/``keyword``/``regexp`` entries and ``@ads`` / ``@cn`` attributes as the
real files carry them. Smaller scales keep the shape (tests use 0.01 and less).

Everything is reproducible from the seed; :func:`generate` also returns samples (names and
addresses inside and outside the lists) for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import random
import string
import sys
from dataclasses import dataclass, field

from vtwist.routing.geodata.wire import (
    DOMAIN,
    FULL,
    PLAIN,
    REGEX,
    encode_cidr,
    encode_domain,
    encode_geoip,
    encode_geosite,
)
from vtwist.routing.matcher import PRIVATE_NETWORKS

#: Share of the address blocks each large country gets; the rest is spread over the others.
BIG = {"us": 0.24, "cn": 0.075, "jp": 0.05, "de": 0.045, "gb": 0.04, "kr": 0.035,
       "br": 0.03, "fr": 0.03, "ru": 0.03, "ca": 0.025, "in": 0.025, "it": 0.02, "au": 0.02,
       "nl": 0.02, "hk": 0.01, "tw": 0.01, "sg": 0.008, "ir": 0.008}
TLDS = ("com", "net", "org", "io", "co", "info", "tv", "me", "dev", "app")
CN_TLDS = ("cn", "com.cn", "net.cn", "com", "net", "org.cn", "gov.cn")


def _countries(rng: random.Random) -> list[str]:
    codes = set(BIG)
    while len(codes) < 250:
        codes.add(rng.choice(string.ascii_lowercase) + rng.choice(string.ascii_lowercase))
    return sorted(codes)


@dataclass
class Samples:
    """Destinations known to fall inside or outside lists (for tests and benchmarks)."""

    ips: dict[str, list[str]] = field(default_factory=dict)  # country -> addresses in it
    unlisted_ips: list[str] = field(default_factory=list)  # addresses in no country
    domains: dict[str, list[str]] = field(default_factory=dict)  # list -> names it matches
    attr_domains: dict[str, list[str]] = field(default_factory=dict)  # "cn@ads" -> names
    other_domains: list[str] = field(default_factory=list)  # names in no list (probably)


def _blocks(rng: random.Random, countries: list[str], count: int, version: int
            ) -> dict[str, list[tuple[int, int]]]:
    """Disjoint (network, prefix) blocks per country, walking the address space upwards."""
    weights = [BIG.get(c, (1 - sum(BIG.values())) / (len(countries) - len(BIG)))
               for c in countries]
    reserved = [ipaddress.ip_network(n) for n in PRIVATE_NETWORKS]
    reserved = [n for n in reserved if n.version == version]
    out: dict[str, list[tuple[int, int]]] = {c: [] for c in countries}
    if version == 4:
        pos, top, bits = 1 << 24, 223 << 24, 32
        prefixes, pweights = (16, 18, 19, 20, 21, 22, 23, 24), (1, 2, 3, 6, 10, 18, 25, 35)
    else:
        pos, top, bits = 0x2001 << 112, 0x2C00 << 112, 128
        prefixes, pweights = (29, 32, 36, 40, 44, 48), (2, 20, 10, 10, 15, 43)
    picks = rng.choices(countries, weights, k=count)
    sizes = rng.choices(prefixes, pweights, k=count)
    # Space the blocks so that ``count`` of them fit below ``top``, with gaps between.
    mean = sum((1 << (bits - p)) * w for p, w in zip(prefixes, pweights, strict=True)) / sum(
        pweights)
    gap = max(0, int((top - pos) / count - mean))
    made = 0
    for country, prefix in zip(picks, sizes, strict=True):
        size = 1 << (bits - prefix)
        pos += rng.randrange(gap + 1) if gap else 0
        pos = (pos + size - 1) // size * size  # aligned
        if pos + size > top:
            break
        net = ipaddress.ip_network((pos, prefix))
        if any(net.overlaps(r) for r in reserved):
            pos += size
            continue
        out[country].append((pos, prefix))
        pos += size
        made += 1
    return out


def write_geoip(path: str, lists: dict[str, list[tuple[bytes, int]]]) -> None:
    """A geoip.dat from {code: [(ip bytes, prefix)]} (codes written upper-case, as V2Ray's)."""
    with open(path, "wb") as f:
        for code, cidrs in lists.items():
            body = b"".join(encode_cidr(ip, prefix) for ip, prefix in cidrs)
            f.write(encode_geoip(code.upper(), body))


def write_geosite(path: str, lists: dict[str, list[tuple[int, str, tuple[str, ...]]]]) -> None:
    """A geosite.dat from {code: [(type, value, attribute keys)]}."""
    with open(path, "wb") as f:
        for code, domains in lists.items():
            body = b"".join(encode_domain(kind, value, attrs) for kind, value, attrs in domains)
            f.write(encode_geosite(code.upper(), body))


def _label(rng: random.Random, lo: int = 4, hi: int = 12) -> str:
    letters = string.ascii_lowercase + string.digits
    first = rng.choice(string.ascii_lowercase)
    return first + "".join(rng.choice(letters) for _ in range(rng.randint(lo, hi) - 1))


def _ip_text(n: int, version: int) -> str:
    return str(ipaddress.IPv4Address(n) if version == 4 else ipaddress.IPv6Address(n))


def make_geoip(rng: random.Random, scale: float, samples: Samples
               ) -> dict[str, list[tuple[bytes, int]]]:
    """The geoip lists (and address samples)."""
    countries = _countries(rng)
    lists: dict[str, list[tuple[bytes, int]]] = {c: [] for c in countries}
    blocks4 = _blocks(rng, countries, max(200, int(900_000 * scale)), 4)
    blocks6 = _blocks(rng, countries, max(50, int(90_000 * scale)), 6)
    for version, blocks in ((4, blocks4), (6, blocks6)):
        width = 4 if version == 4 else 16
        bits = 32 if version == 4 else 128
        for country, nets in blocks.items():
            rng.shuffle(nets)  # the real files are sorted; V2Ray sorts anyway
            lists[country].extend((n.to_bytes(width, "big"), p) for n, p in nets)
            for n, p in nets[:3]:
                samples.ips.setdefault(country, []).append(
                    _ip_text(n + rng.randrange(1 << (bits - p)), version))
        # Addresses just past a block, mostly in the gaps between countries.
        for country in ("cn", "us", "jp"):
            for n, p in blocks[country][:2]:
                samples.unlisted_ips.append(_ip_text(n + (1 << (bits - p)), version))
    lists["private"] = [(ipaddress.ip_network(n).network_address.packed,
                         ipaddress.ip_network(n).prefixlen) for n in PRIVATE_NETWORKS]
    samples.ips["private"] = ["10.1.2.3", "192.168.7.7", "127.0.0.9", "fd00::5"]
    return lists


def make_geosite(rng: random.Random, scale: float, samples: Samples
                 ) -> dict[str, list[tuple[int, str, tuple[str, ...]]]]:
    """The geosite lists (and name samples)."""
    Domains = list[tuple[int, str, tuple[str, ...]]]
    lists: dict[str, Domains] = {}

    def names(n: int, tlds: tuple[str, ...], attr: str = "", attr_share: float = 0.0
              ) -> Domains:
        out: Domains = []
        seen: set[str] = set()
        while len(out) < n:
            name = f"{_label(rng)}.{rng.choice(tlds)}"
            if name in seen:
                continue
            seen.add(name)
            roll = rng.random()
            kind = DOMAIN if roll < 0.9 else FULL if roll < 0.999 else PLAIN
            if kind == PLAIN:
                name = _label(rng, 6, 10)
            attrs = (attr,) if attr and rng.random() < attr_share else ()
            out.append((kind, name, attrs))
        return out

    def regexps(n: int, word: str) -> Domains:
        return [(REGEX, rf"^[a-z0-9-]+\.{word}{i}\.(com|net)$", ()) for i in range(n)]

    def count(n: int) -> int:
        return max(5, int(n * scale))

    lists["cn"] = names(count(55_000), CN_TLDS, "ads", 0.02) + regexps(12, "cnre")
    lists["geolocation-cn"] = names(count(20_000), CN_TLDS)
    lists["geolocation-!cn"] = names(count(25_000), TLDS, "cn", 0.03) + regexps(6, "gre")
    lists["category-ads-all"] = names(count(12_000), TLDS + CN_TLDS, "ads", 0.5) + regexps(
        10, "adre")
    lists["private"] = [(DOMAIN, "lan", ()), (DOMAIN, "local", ()), (DOMAIN, "localhost", ()),
                        (FULL, "localhost", ()), (REGEX, r"^[^.]+$", ())]
    for i in range(max(10, int(1_000 * min(1.0, scale * 10)))):
        lists[f"site{i:04d}"] = names(rng.choice((10, 20, 40, 80, 200)), TLDS, "cn", 0.1)
    for code, domains in lists.items():
        picked = [v for k, v, _ in domains if k in (DOMAIN, FULL)][:6]
        subs = [f"www.{v}" for k, v, _ in domains if k == DOMAIN][:3]
        keyword = [f"x{v}y.com" for k, v, _ in domains if k == PLAIN][:2]
        regex = [f"a-1.{v.split(chr(92) + '.')[1]}.com" for k, v, _ in domains
                 if k == REGEX and v.startswith("^[a-z0-9-]+")][:2]
        samples.domains[code] = picked + subs + keyword + regex
        for attr in ("ads", "cn"):
            tagged = [v for k, v, a in domains if attr in a and k in (DOMAIN, FULL)][:4]
            if tagged:
                samples.attr_domains[f"{code}@{attr}"] = tagged
    samples.other_domains = [f"{_label(rng)}.{rng.choice(TLDS)}" for _ in range(40)]
    return lists


def generate(directory: str, scale: float = 1.0, seed: int = 1) -> Samples:
    """Write geoip.dat, geosite.dat, ext-ip.dat and ext-site.dat into ``directory``."""
    rng = random.Random(seed)
    samples = Samples()
    os.makedirs(directory, exist_ok=True)
    geoip = make_geoip(rng, scale, samples)
    write_geoip(os.path.join(directory, "geoip.dat"), geoip)
    geosite = make_geosite(rng, scale, samples)
    write_geosite(os.path.join(directory, "geosite.dat"), geosite)
    # ext: files, as third-party lists are shipped: a few codes of their own.
    ext_ip = {"office": [(bytes([203, 0, 113, 0]), 25), (bytes([198, 51, 100, 0]), 24)],
              "lab": [(ipaddress.IPv6Address("2001:db8:aa::").packed, 48)]}
    write_geoip(os.path.join(directory, "ext-ip.dat"), ext_ip)
    samples.ips["ext-ip.dat:office"] = ["203.0.113.7", "198.51.100.200"]
    samples.ips["ext-ip.dat:lab"] = ["2001:db8:aa::1"]
    ext_site = {"blocked": [(DOMAIN, "blocked-one.test", ()), (FULL, "exact.blocked.test", ()),
                            (DOMAIN, "ad-blocked.test", ("ads",)), (PLAIN, "tracker", ())],
                "work": [(DOMAIN, "intranet.work.test", ())]}
    write_geosite(os.path.join(directory, "ext-site.dat"), ext_site)
    samples.domains["ext-site.dat:blocked"] = ["blocked-one.test", "a.blocked-one.test",
                                               "exact.blocked.test", "my-tracker.test"]
    samples.attr_domains["ext-site.dat:blocked@ads"] = ["ad-blocked.test", "x.ad-blocked.test"]
    samples.domains["ext-site.dat:work"] = ["intranet.work.test"]
    return samples


def main(argv: list[str] | None = None) -> int:
    """Command line: write the files into a directory."""
    p = argparse.ArgumentParser(prog="python -m vtwist.testing.geodata", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory")
    p.add_argument("--scale", type=float, default=1.0, help="1.0: full size (default)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    generate(args.directory, args.scale, args.seed)
    for name in ("geoip.dat", "geosite.dat"):
        size = os.path.getsize(os.path.join(args.directory, name))
        print(f"{name}: {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
