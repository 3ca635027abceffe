"""V2Ray JSON config loading: comments, every supported field, error paths, --test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import ConfigErrorMixin
from vtwist.config.errors import ConfigError
from vtwist.config.loader import load_file, loads, parse_config, parse_ports, strip_comments
from vtwist.config.node import Node
from vtwist.config.registry import OUTBOUND_MODULES
from vtwist.proxy.blackhole.settings import BlackholeSettings
from vtwist.proxy.freedom.settings import FreedomSettings

FREEDOM = {"protocol": "freedom", "tag": "direct"}


def config(**extra):
    base = {"outbounds": [dict(FREEDOM)]}
    base.update(extra)
    return base


TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


class CommentTests(SynchronousTestCase):
    def test_line_block_and_hash_comments(self) -> None:
        text = """{
          // a line comment
          "a": "keep // this and /* this */ and # this", /* block
          spanning lines */ "b": 2,
          # hash comment
          "c": "quote \\" // still string"
        }"""
        self.assertEqual(loads(text), {"a": "keep // this and /* this */ and # this", "b": 2,
                                       "c": 'quote " // still string'})

    def test_error_names_line(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            loads('{\n  "a": 1,\n  "b": \n}')
        self.assertIn("line 4", str(cm.exception))

    def test_too_deep(self) -> None:
        with self.assertRaises(ConfigError) as cm:
            loads("[" * 100_000)
        self.assertEqual(str(cm.exception), "invalid JSON: nested too deeply")

    def test_file_with_bom_loads(self) -> None:
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b'\xef\xbb\xbf// comment\n{"a": 1}')
        self.assertEqual(load_file(path), {"a": 1})

    def test_unterminated_block_comment(self) -> None:
        self.assertRaises(ConfigError, strip_comments, "{ /* oops }")


class PortTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(parse_ports(Node(1080, "port")), [1080])
        self.assertEqual(parse_ports(Node("1080", "port")), [1080])
        self.assertEqual(parse_ports(Node("1000-1002", "port")), [1000, 1001, 1002])
        self.assertEqual(parse_ports(Node("80, 443,1000-1001", "port")), [80, 443, 1000, 1001])

    def test_errors(self) -> None:
        for bad in ("abc", 0, 70000, "3-1", "", True, None, [1]):
            with self.assertRaises(ConfigError, msg=repr(bad)) as cm:
                parse_ports(Node(bad, "inbounds[0].port"))
            self.assertTrue(str(cm.exception).startswith("inbounds[0].port: "), str(cm.exception))

    def test_unix_listen_needs_no_port(self) -> None:
        """A UNIX-socket ``listen`` (4.34: /path, @name, @@name) has no port, or one that
        is ignored (a range still gives one listener); an IP still needs one."""
        c = parse_config(config(inbounds=[
            {"listen": "@vless-ws", "protocol": "socks"},
            {"listen": "/dev/shm/x.sock", "protocol": "socks", "port": "1000-1002"},
            {"listen": "@@padded", "protocol": "socks", "port": 1234}]))
        self.assertEqual([(i.listen, i.ports) for i in c.inbounds],
                         [("@vless-ws", [0]), ("/dev/shm/x.sock", [1000]),
                          ("@@padded", [1234])])
        with self.assertRaises(ConfigError) as cm:
            parse_config(config(inbounds=[{"listen": "127.0.0.1", "protocol": "socks"}]))
        self.assertEqual(str(cm.exception), "inbounds[0].port: is required")


class ConfigTests(ConfigErrorMixin, SynchronousTestCase):
    def test_minimal(self) -> None:
        c = parse_config(config())
        self.assertEqual(c.outbounds[0].tag, "direct")
        self.assertEqual(c.outbounds[0].settings, FreedomSettings())
        self.assertEqual(c.log.loglevel, "warning")
        self.assertEqual(c.policy.level(0).handshake, 4)
        self.assertEqual(c.policy.level(0).conn_idle, 300)
        self.assertEqual(c.policy.level(0).uplink_only, 2)
        self.assertEqual(c.policy.level(0).downlink_only, 5)

    def test_all_fields(self) -> None:
        c = parse_config({
            "log": {"loglevel": "Debug", "access": "/tmp/a.log", "error": "/tmp/e.log"},
            "policy": {"levels": {"0": {"handshake": 3, "connIdle": 100, "uplinkOnly": 1,
                                        "downlinkOnly": 2, "bufferSize": 4}},
                       "system": {}},
            "outbounds": [
                {"protocol": "freedom", "tag": "direct",
                 "settings": {"domainStrategy": "UseIPv4", "redirect": "127.0.0.1:8080",
                              "userLevel": 0}},
                {"protocol": "blackhole", "tag": "block",
                 "settings": {"response": {"type": "http"}}},
            ],
        })
        self.assertEqual(c.log.loglevel, "debug")
        self.assertEqual(c.log.access, "/tmp/a.log")
        self.assertEqual(c.policy.level(0).conn_idle, 100)
        self.assertEqual(c.policy.level(0).buffer_size, 4)
        self.assertEqual(c.policy.level(7).conn_idle, 300)
        self.assertEqual(c.outbounds[0].settings.domain_strategy, "UseIPv4")
        self.assertEqual(c.outbounds[0].settings.redirect, ("127.0.0.1", 8080))
        self.assertEqual(c.outbounds[1].settings, BlackholeSettings("http"))
        self.assertEqual(c.warnings, [])

    def test_unknown_keys_warn_with_path(self) -> None:
        warnings: list[str] = []
        parse_config({"outbounds": [{"protocol": "freedom", "setings": {}}], "foo": 1,
                      "fakedns": {}}, warnings.append)
        self.assertIn('outbounds[0].setings: unknown field, ignored (did you mean "settings"?)',
                      warnings)
        self.assertIn("foo: unknown field, ignored", warnings)
        self.assertIn("fakedns: not supported by vtwist yet, ignored", warnings)

    def test_send_through_warns(self) -> None:
        """V2Ray's sendThrough (the source address) is not honoured: say so."""
        warnings: list[str] = []
        parse_config({"outbounds": [{"protocol": "freedom", "sendThrough": "0.0.0.0"}]},
                     warnings.append)
        self.assertEqual(warnings, [])
        parse_config({"outbounds": [{"protocol": "freedom", "sendThrough": "10.0.0.2"}]},
                     warnings.append)
        self.assertEqual(warnings, ["outbounds[0]: sendThrough is not supported by vtwist and "
                                    "is ignored; connections leave from the system's choice "
                                    "of source address"])

    def test_duplicate_inbound_tags_warn(self) -> None:
        """V2Ray 4.34 accepts two inbounds with one tag (app/proxyman/inbound keeps the last
        in a map): vtwist accepts them, both listen, and one warning names both paths."""
        warnings: list[str] = []
        c = parse_config({"inbounds": [
            {"tag": "in", "protocol": "socks", "port": 1080},
            {"tag": "other", "protocol": "socks", "port": 1081},
            {"protocol": "socks", "port": 1082}, {"protocol": "socks", "port": 1083},
            {"tag": "in", "protocol": "http", "port": 8080}],
            "outbounds": [{"protocol": "freedom"}]}, warnings.append)
        self.assertEqual([i.ports for i in c.inbounds], [[1080], [1081], [1082], [1083],
                                                         [8080]])
        self.assertEqual(warnings, [
            "inbounds[4]: tag 'in' is also inbounds[0]'s: both listen, routing's inboundTag "
            "matches both and the API's tag calls reach the first (V2Ray 4.34 starts only "
            "the last one)"])

    def test_error_paths(self) -> None:
        self.assertConfigError({"outbounds": []}, "outbounds: at least one outbound is required")
        self.assertConfigError([], "expected an object, got list")
        self.assertConfigError(
            {"outbounds": [{"protocol": "nope"}]},
            "outbounds[0].protocol: unsupported outbound protocol 'nope' "
            f"(vtwist has: {', '.join(sorted(OUTBOUND_MODULES))})")
        self.assertIn("blackhole, dns, freedom, http", ", ".join(sorted(OUTBOUND_MODULES)))
        self.assertConfigError(
            config(inbounds=[{"protocol": "socks"}]), "inbounds[0].port: is required")
        self.assertConfigError(
            {"outbounds": [{"protocol": "freedom", "settings": {"domainStrategy": "Fast"}}]},
            "outbounds[0].settings.domainStrategy: expected one of AsIs, UseIP, UseIPv4, "
            "UseIPv6, got 'Fast'")
        self.assertConfigError(
            {"outbounds": [{"protocol": "freedom", "settings": {"redirect": "nohost"}}]},
            "outbounds[0].settings.redirect: expected \"host:port\", got 'nohost'")
        self.assertConfigError(
            config(log={"loglevel": "loud"}),
            "log.loglevel: expected one of debug, info, warning, error, none, got \"loud\"")
        self.assertConfigError(
            config(policy={"levels": {"0": {"handshake": "x"}}}),
            "policy.levels.0.handshake: expected an integer >= 0, got \"x\"")
        self.assertConfigError(
            {"outbounds": [{"protocol": "freedom", "tag": "a"}, {"protocol": "blackhole",
                                                               "tag": "a"}]},
            "outbounds: duplicate outbound tag 'a'")
        self.assertConfigError(
            {"outbounds": [{"protocol": "freedom", "streamSettings": {
                "network": "quic", "quicSettings": {"security": "rot13"}}}]},
            "outbounds[0].streamSettings.quicSettings.security: expected one of none, "
            "aes-128-gcm, chacha20-poly1305, got 'rot13'")
        self.assertConfigError(
            {"outbounds": [{"protocol": "blackhole",
                            "settings": {"response": {"type": "teapot"}}}]},
            "outbounds[0].settings.response.type: expected one of none, http, got \"teapot\"")

    def test_global_transport_settings(self) -> None:
        """Top-level ``transport`` settings apply where a stream has none of its own."""
        c = parse_config({
            "transport": {"kcpSettings": {"mtu": 1200, "header": {"type": "dtls"}}},
            "inbounds": [
                {"protocol": "socks", "port": 1080, "streamSettings": {"network": "kcp"}},
                {"protocol": "socks", "port": 1081,
                 "streamSettings": {"network": "kcp", "kcpSettings": {"mtu": 1000}}}],
            "outbounds": [{"protocol": "freedom"}]})
        self.assertEqual(c.inbounds[0].stream.kcp.mtu, 1200)
        self.assertEqual(c.inbounds[0].stream.kcp.header_type, "dtls")
        self.assertEqual(c.inbounds[1].stream.kcp.mtu, 1000)
        self.assertEqual(c.inbounds[1].stream.kcp.header_type, "none")
        self.assertConfigError(
            config(transport={"kcpSettings": {"mtu": 9000}},
                   inbounds=[{"protocol": "socks", "port": 1,
                              "streamSettings": {"network": "kcp"}}]),
            "transport.kcpSettings.mtu: expected an integer 576-1460, got 9000")

    def test_node_int_message(self) -> None:
        node = Node({"port": "abc"}, "outbounds[0].settings.vnext[0]")
        with self.assertRaises(ConfigError) as cm:
            node.port("port")
        self.assertEqual(str(cm.exception),
                         'outbounds[0].settings.vnext[0].port: expected an integer 1-65535, '
                         'got "abc"')


class CheckCommandTests(SynchronousTestCase):
    """``twistd vtwist --test`` and ``python -m vtwist check`` validate and exit 0/1."""

    def write(self, data) -> str:
        fd, path = tempfile.mkstemp(suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(data if isinstance(data, str) else json.dumps(data))
        self.addCleanup(os.unlink, path)
        return path

    def run_twistd(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*TWISTD, "vtwist", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    def test_valid(self) -> None:
        good = self.write('// comment\n{"outbounds": [{"protocol": "freedom"}]}')
        result = self.run_twistd("--test", "--config", good)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Configuration OK", result.stdout)

    def test_invalid(self) -> None:
        bad = self.write({"outbounds": [{"protocol": "freedom",
                                         "settings": {"domainStrategy": 3}}]})
        result = self.run_twistd("-t", "-c", bad)
        self.assertEqual(result.returncode, 1)
        self.assertIn("outbounds[0].settings.domainStrategy: expected a string, got 3",
                      result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_missing_file(self) -> None:
        result = self.run_twistd("--test", "--config", "/nonexistent/x.json")
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot read /nonexistent/x.json", result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)


#: Parses the config in argv[1] and prints the Twisted modules that got imported.
_PARSE_ONLY = (
    "import json, sys\n"
    "from vtwist.config.loader import parse_config\n"
    "config = parse_config(json.loads(sys.argv[1]))\n"
    "assert [i.stream.network for i in config.inbounds] == ['tcp', 'kcp', 'ws'], config\n"
    "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted')))\n"
)


class ParseWithoutTwistedTests(SynchronousTestCase):
    """Parsing a config is plain data work: it imports no Twisted module."""

    def test_every_network_parses_without_twisted(self) -> None:
        from tests.certs import shared_server_cert

        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        cert_file, key_file = shared_server_cert("example.test").write(directory, "s")
        user = {"id": "b831381d-6324-4d53-ad4f-8cda48b30811", "alterId": 0}
        http_header = {"type": "http", "request": {"path": ["/a"]}}
        data = {
            "inbounds": [
                {"protocol": "socks", "port": 1080, "tag": "in-socks",
                 "streamSettings": {"network": "tcp", "tcpSettings": {"header": http_header}}},
                {"protocol": "vmess", "port": 1081, "settings": {"clients": [user]},
                 "streamSettings": {"network": "kcp", "kcpSettings": {"mtu": 1200}}},
                {"protocol": "vmess", "port": 1082, "settings": {"clients": [user]},
                 "streamSettings": {
                     "network": "ws", "security": "tls", "wsSettings": {"path": "/ws"},
                     "tlsSettings": {"certificates": [{"certificateFile": cert_file,
                                                       "keyFile": key_file}]}}},
            ],
            "outbounds": [
                {"protocol": "freedom", "tag": "direct"},
                {"protocol": "blackhole", "tag": "block"},
                {"protocol": "dns", "tag": "dns-out", "settings": {"network": "tcp"}},
                {"protocol": "vmess", "tag": "proxy",
                 "settings": {"vnext": [{"address": "127.0.0.1", "port": 443,
                                         "users": [user]}]},
                 "streamSettings": {"network": "ws", "security": "tls",
                                    "tlsSettings": {"serverName": "example.test"}}},
            ],
            "routing": {"rules": [
                {"type": "field", "inboundTag": ["in-socks"], "outboundTag": "proxy"},
                {"type": "field", "ip": ["10.0.0.0/8"], "outboundTag": "block"},
                {"type": "field", "domain": ["domain:example.com"], "outboundTag": "direct"},
            ]},
            "dns": {"servers": ["1.1.1.1", "https://dns.example/dns-query", "localhost",
                                {"address": "8.8.8.8", "domains": ["domain:example.com"],
                                 "expectIPs": ["10.0.0.0/8"]}],
                    "hosts": {"domain:a.example": ["10.0.0.1", "::1"]}, "clientIp": "1.2.3.4"},
        }
        # The child imports this tree's vtwist, whatever is installed.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p))
        result = subprocess.run([sys.executable, "-c", _PARSE_ONLY, json.dumps(data)],
                                capture_output=True, text=True, timeout=60, check=False,
                                env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout.strip().splitlines()[-1]), [])
