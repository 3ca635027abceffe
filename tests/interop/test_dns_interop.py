"""The ``dns`` outbound and the ``dns`` section beside V2Ray 4.34: the same config (a
dokodemo-door on a local port -> the dns outbound; hosts, an alias and a local
twisted.names server) in both, the same ``dig`` questions to each, the same answers."""

from __future__ import annotations

import shutil
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SkipTest, TestCase

from tests.dns_helpers import Zone, start_dns
from tests.interop.v2ray_runner import V2Ray
from tests.netutil import free_port
from tests.services import start_service
from tests.test_dns_outbound import dig

QUESTIONS = [
    ("a.test", "A"), ("a.test", "AAAA"), ("b.test", "A"), ("b.test", "AAAA"),
    ("static.test", "A"), ("static.test", "AAAA"), ("x.wild.test", "A"),
    ("alias.test", "A"), ("two.test", "A"), ("missing.test", "A"), ("t.test", "TXT"),
]


def config(door: int, server: int) -> dict[str, Any]:
    return {
        "log": {"loglevel": "warning"},
        "dns": {"servers": [{"address": "127.0.0.1", "port": server}], "tag": "dns-in",
                "hosts": {"static.test": "10.7.7.7", "domain:wild.test": "10.8.8.8",
                          "alias.test": "a.test", "two.test": "10.9.9.9"}},
        "inbounds": [{"tag": "door", "protocol": "dokodemo-door", "listen": "127.0.0.1",
                      "port": door, "settings": {"address": "127.0.0.1", "port": server,
                                                 "network": "tcp,udp"}}],
        "outbounds": [{"tag": "dns-out", "protocol": "dns"},
                      {"tag": "direct", "protocol": "freedom"}],
        "routing": {"rules": [{"type": "field", "inboundTag": ["dns-in"],
                               "outboundTag": "direct"}]},
    }


def summary(output: bytes) -> tuple[str, list[str]]:
    """dig's status and its answer records (name, TTL, type, data), sorted."""
    text = output.decode()
    status = text.split("status: ", 1)[1].split(",", 1)[0] if "status: " in text else "?"
    answers = sorted(" ".join(line.split()) for line in text.splitlines()
                     if line and not line.startswith(";"))
    return status, answers


class DnsInteropTests(TestCase):
    """vtwist and V2Ray 4.34 answer the same questions the same way."""

    timeout = 120

    @defer.inlineCallbacks
    def test_same_answers(self) -> Any:
        if shutil.which("dig") is None:
            raise SkipTest("dig is not installed (apt-get install -y dnsutils)")
        zone = Zone({"a.test": ["10.0.0.1", "fd00::1"], "b.test": ["192.0.2.7"]})
        zone.txt["t.test"] = "forwarded text"
        server = start_dns(reactor, zone, self)
        ours, theirs = free_port(udp_too=True), free_port(udp_too=True)
        yield start_service(config(ours, server), self)
        v2ray = V2Ray(config(theirs, server))
        self.addCleanup(v2ray.stop)
        yield defer.Deferred.fromCoroutine(v2ray.wait_port(theirs))
        for name, kind in QUESTIONS:
            args = (name, kind, "+noall", "+answer", "+comments")
            got = summary((yield dig(ours, *args)))
            want = summary((yield dig(theirs, *args)))
            self.assertEqual(got, want, f"{name} {kind}: vtwist {got}, V2Ray {want}")
            self.assertNotEqual(want[0], "?", f"{name} {kind}: V2Ray did not answer")
