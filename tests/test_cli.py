"""The ``vtwist`` command line: every command, its output and its exit status."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
import zlib
from dataclasses import replace
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.test_links import DESIGN_LINK, UID, b64link, fields
from vtwist import cli, runner
from vtwist.genconfig import client_config, client_config_from_link
from vtwist.share import qr
from vtwist.share.link import VmessLink, parse_link
from vtwist.share.outbound import link_to_outbound
from vtwist.share.subscription import encode_subscription

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The design link pointed at loopback: used wherever a command could start something.
LOCAL_LINK = replace(parse_link(DESIGN_LINK), add="127.0.0.1").to_link()


def decode_qr(matrix: list[list[bool]]) -> str:
    """Decode a module matrix with a real QR decoder (zxing-cpp); "" when it is missing.

    Callers also compare the matrix with the expected one; ``test_real_decoder_present``
    fails when the decoder is not installed, so the decode check cannot silently vanish.
    """
    try:
        import zxingcpp
    except ImportError:  # pragma: no cover
        return ""
    scale = 4
    rows = [bytes((0 if dark else 255) for dark in row for _ in range(scale))
            for row in matrix for _ in range(scale)]
    image = memoryview(b"".join(rows)).cast("B", shape=[len(rows), len(rows[0])])
    results = zxingcpp.read_barcodes(image)
    assert len(results) == 1, results
    return results[0].text


def read_png_grey(data: bytes) -> list[bytes]:
    """Pixel rows of a PNG written by :func:`vtwist.share.qr.png_bytes`."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("not a PNG")
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, _height, depth, colour, _, filt, interlace = struct.unpack(">IIBBBBB", body)
            if (depth, colour, filt, interlace) != (8, 0, 0, 0):
                raise ValueError("only 8-bit greyscale, non-interlaced PNGs are read")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width + 1
    rows = []
    for i in range(0, len(raw), stride):
        if raw[i] != 0:
            raise ValueError("only filter type 0 is read")
        rows.append(raw[i + 1:i + stride])
    return rows


def terminal_to_matrix(drawing: str) -> list[list[bool]]:
    """Undo :func:`vtwist.share.qr.render_terminal` (light modules are the ink)."""
    table = {"\u2588": (False, False), "\u2580": (False, True), "\u2584": (True, False),
             " ": (True, True)}
    matrix: list[list[bool]] = []
    for line in drawing.splitlines():
        pairs = [table[c] for c in line]
        matrix.append([p[0] for p in pairs])
        matrix.append([p[1] for p in pairs])
    return matrix


class CLITestCase(SynchronousTestCase):
    """Runs ``cli.main`` with captured stdout/stderr."""

    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stderr", err)
        self.patch(sys, "stdout", out)
        status = cli.main(list(argv), out)
        return status, out.getvalue(), err.getvalue()

    def usage_error(self, *argv: str) -> str:
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        e = self.assertRaises(SystemExit, cli.main, list(argv), io.StringIO())
        self.assertEqual(e.code, 2)
        return err.getvalue()

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path


class SimpleCommandTests(CLITestCase):
    def test_uuid(self) -> None:
        status, out, _ = self.run_cli("uuid")
        self.assertEqual(status, 0)
        self.assertEqual(uuid.UUID(out.strip()).version, 4)

    def test_usage_errors(self) -> None:
        self.assertIn("required", self.usage_error())
        self.assertIn("invalid choice", self.usage_error("frobnicate"))
        self.assertIn("required", self.usage_error("link"))
        self.assertIn("invalid choice", self.usage_error("config", "server", "--transport", "xhttp"))

    def test_console_script(self) -> None:
        """``vtwist`` is installed (pyproject's console script; tools/test.sh installs it)."""
        exe = shutil.which("vtwist")
        self.assertIsNotNone(exe, "the vtwist console script is not installed: pip install -e .")
        done = subprocess.run([exe, "uuid"], capture_output=True, text=True, timeout=30)
        self.assertEqual(done.returncode, 0, done.stderr)
        uuid.UUID(done.stdout.strip())

    def test_module_and_script_entry(self) -> None:
        env = {**os.environ, "PYTHONPATH": ROOT}
        done = subprocess.run([sys.executable, "-m", "vtwist", "link", "decode", DESIGN_LINK],
                              capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(json.loads(done.stdout)["outbound"], link_to_outbound(DESIGN_LINK))
        done = subprocess.run([sys.executable, "-m", "vtwist", "link", "decode", "vmess://x@y"],
                              capture_output=True, text=True, timeout=30, env=env, cwd=ROOT)
        self.assertEqual(done.returncode, 2)
        self.assertEqual(done.stderr, "vtwist: invalid vmess link: port: is missing (the port)\n")


class LinkCommandTests(CLITestCase):
    def test_decode(self) -> None:
        """The link's fields and the outbound it means (as the README says)."""
        status, out, err = self.run_cli("link", "decode", DESIGN_LINK)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(json.loads(out)["outbound"], link_to_outbound(DESIGN_LINK))
        self.assertEqual(json.loads(out)["fields"]["add"], "207.246.108.36")
        status, out, err = self.run_cli("link", "decode", "--outbound", DESIGN_LINK)
        self.assertEqual(json.loads(out), link_to_outbound(DESIGN_LINK))
        self.assertTrue(out.startswith("{\n  \"protocol\": \"vmess\""))

    def test_decode_notes_ignored_fields(self) -> None:
        link = b64link(fields(net="ws", type="dtls", sni="s", fp="chrome", allowInsecure=True))
        status, _, err = self.run_cli("link", "decode", link)
        self.assertEqual(status, 0)
        self.assertEqual(err.splitlines(), [
            "warning: fp 'chrome': V2Ray 4.34 has no TLS fingerprint setting; ignored",
            "warning: sni 's' means nothing for ws; ignored",
            "warning: type 'dtls' means nothing for ws; ignored",
            "warning: allowInsecure without tls; ignored",
        ])

    def test_decode_fields(self) -> None:
        status, out, _ = self.run_cli("link", "decode", "--fields", DESIGN_LINK)
        self.assertEqual(status, 0)
        self.assertEqual(json.loads(out)["type"], "dtls")
        self.assertEqual(json.loads(out)["add"], "207.246.108.36")

    def test_decode_stdin(self) -> None:
        self.patch(sys, "stdin", io.StringIO(DESIGN_LINK + "\n"))
        status, out, _ = self.run_cli("link", "decode", "--outbound", "-")
        self.assertEqual(json.loads(out), link_to_outbound(DESIGN_LINK))

    def test_decode_errors(self) -> None:
        for link, message in (
            ("vmess://!!", "invalid vmess link: body: not valid base64 (expected vmess:// "
                           "followed by base64 of a JSON object, or vmess://uuid@host:port?...)"),
            (b64link(fields(port=70000)), "invalid vmess link: port: port out of range "
                                          "1-65535: 70000"),
            (b64link(fields(id="xyz")), "invalid vmess link: id: not a valid UUID: 'xyz'"),
            (b64link({"port": 1, "id": UID}), "invalid vmess link: add: is missing (the "
                                              "server address)"),
            (b64link(fields(net="ds")), "invalid vmess link: net: transport 'domainsocket' has "
                                        "no share-link form (supported: tcp, kcp, ws, h2, grpc,"
                                        " quic)"),
        ):
            self.assertEqual(self.run_cli("link", "decode", link), (2, "", f"vtwist: {message}\n"))

    def test_encode(self) -> None:
        link = parse_link(b64link(fields(ps="srv", net="ws", path="/p", tls="tls")))
        config = client_config(link.to_outbound())
        config["outbounds"].insert(0, {"protocol": "freedom", "tag": "first"})
        path = self.write("// a comment V2Ray allows\n" + json.dumps(config))
        status, out, err = self.run_cli("link", "encode", "--config", path)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(parse_link(out.strip()), link.canonical())
        self.assertTrue(out.startswith("vmess://ey"))
        status, out, _ = self.run_cli("link", "encode", "--config", path, "--outbound", "srv",
                                      "--url")
        self.assertEqual(parse_link(out.strip()), link.canonical())
        self.assertTrue(out.startswith(f"vmess://{UID}@127.0.0.1:1234?type=ws"))

    def test_encode_warns_and_errors(self) -> None:
        outbound = parse_link(b64link(fields(net="kcp"))).to_outbound()
        outbound["streamSettings"]["kcpSettings"]["tti"] = 20
        path = self.write(json.dumps({"outbounds": [outbound]}))
        status, out, err = self.run_cli("link", "encode", "--config", path)
        self.assertEqual(status, 0)
        self.assertEqual(err, "warning: streamSettings.kcpSettings.tti cannot be carried by a "
                              "vmess link; dropped\n")
        self.assertEqual(self.run_cli("link", "encode", "--config", path, "--outbound", "x"),
                         (2, "", "vtwist: cannot make a link: --outbound: no outbound "
                                 "tagged 'x' (tags: n)\n"))
        missing = os.path.join(self.mktemp(), "nope.json")
        status, _, err = self.run_cli("link", "encode", "--config", missing)
        self.assertEqual(status, 2)
        self.assertTrue(err.startswith("vtwist: config error: cannot read "), err)
        broken = self.write("{")
        status, _, err = self.run_cli("link", "encode", "--config", broken)
        self.assertEqual(status, 2)
        self.assertIn("invalid JSON", err)

    def test_qr_terminal_decodes(self) -> None:
        status, out, _ = self.run_cli("link", "qr", DESIGN_LINK)
        self.assertEqual(status, 0)
        matrix = terminal_to_matrix(out)
        expected = qr.qr_matrix(DESIGN_LINK)
        self.assertEqual(matrix[:len(expected)], expected)
        decoded = decode_qr(matrix)
        if decoded:
            self.assertEqual(decoded, DESIGN_LINK)

    def test_qr_light_background(self) -> None:
        status, out, _ = self.run_cli("link", "qr", "--light", DESIGN_LINK)
        self.assertEqual(status, 0)
        inverted = [[not m for m in row] for row in terminal_to_matrix(out)]
        expected = qr.qr_matrix(DESIGN_LINK)
        self.assertEqual(inverted[:len(expected)], expected)

    def test_qr_png_decodes(self) -> None:
        path = self.mktemp()
        status, out, err = self.run_cli("link", "qr", DESIGN_LINK, "--png", path, "--scale", "3")
        self.assertEqual((status, out), (0, ""))
        self.assertIn(f"wrote {path}", err)
        with open(path, "rb") as f:
            rows = read_png_grey(f.read())
        expected = qr.qr_matrix(DESIGN_LINK)
        self.assertEqual(len(rows), len(expected) * 3)
        matrix = [[px == 0 for px in row[::3]] for row in rows[::3]]
        self.assertEqual(matrix, expected)
        decoded = decode_qr(matrix)
        if decoded:
            self.assertEqual(decoded, DESIGN_LINK)

    def test_real_decoder_present(self) -> None:
        """The QR tests above decode with zxing-cpp (a test dependency)."""
        self.assertEqual(decode_qr(qr.qr_matrix("vmess://x")), "vmess://x")

    def test_qr_refuses_bad_link(self) -> None:
        status, out, err = self.run_cli("link", "qr", "vmess://")
        self.assertEqual((status, out), (2, ""))
        self.assertEqual(err, "vtwist: invalid vmess link: body: nothing after vmess://\n")

    def test_qr_scale_must_be_positive(self) -> None:
        """A zero or negative --scale is a usage error, not a traceback from the PNG writer."""
        for scale in ("0", "-1", "x"):
            err = self.usage_error("link", "qr", LOCAL_LINK, "--png", self.mktemp(),
                                   "--scale", scale)
            self.assertIn("--scale: expected a whole number >= 1", err)


class ConfigCommandTests(CLITestCase):
    def test_from_link(self) -> None:
        status, out, _ = self.run_cli("config", "from-link", DESIGN_LINK)
        self.assertEqual(status, 0)
        self.assertEqual(json.loads(out), client_config_from_link(DESIGN_LINK))
        path = self.mktemp()
        status, out, _ = self.run_cli("config", "from-link", DESIGN_LINK, "--socks",
                                      "127.0.0.1:2080", "-o", path)
        self.assertEqual((status, out), (0, ""))
        with open(path, encoding="utf-8") as f:
            self.assertEqual(json.load(f)["inbounds"][0]["port"], 2080)

    def test_from_link_errors(self) -> None:
        self.assertEqual(self.run_cli("config", "from-link", DESIGN_LINK, "--socks", "x"),
                         (2, "", "vtwist: bad address: --socks: expected HOST:PORT, got 'x'\n"))

    def server(self, *extra: str) -> tuple[dict[str, Any], VmessLink, str]:
        path = self.mktemp()
        status, out, err = self.run_cli("config", "server", "-o", path, *extra)
        self.assertEqual(status, 0, err)
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        return config, parse_link(out.strip()), err

    def check_pair(self, config: dict[str, Any], link: VmessLink) -> None:
        inbound = config["inbounds"][0]
        self.assertEqual(inbound["protocol"], "vmess")
        self.assertEqual(inbound["settings"]["clients"], [{"id": link.id, "alterId": 0,
                                                           "level": 0}])
        self.assertEqual(inbound["port"], link.port)
        client_stream = link.to_outbound()["streamSettings"]
        server_stream = dict(inbound["streamSettings"])
        server_tls = server_stream.pop("tlsSettings", None)
        client_stream.pop("tlsSettings", None)
        self.assertEqual(server_stream, client_stream)
        if link.tls:
            self.assertEqual(len(server_tls["certificates"]), 1)
        self.assertEqual(config["outbounds"], [{"tag": "direct", "protocol": "freedom",
                                                "settings": {}}])

    def test_server_kcp_dtls(self) -> None:
        config, link, _ = self.server("--transport", "kcp", "--header", "dtls", "--port", "4433",
                                      "--address", "127.0.0.1", "--listen", "127.0.0.1")
        self.assertEqual((link.net, link.type, link.port, link.add), ("kcp", "dtls", 4433,
                                                                      "127.0.0.1"))
        self.assertEqual(config["inbounds"][0]["listen"], "127.0.0.1")
        self.check_pair(config, link)

    def test_server_fresh_uuid(self) -> None:
        _, a, _ = self.server()
        _, b, _ = self.server()
        self.assertNotEqual(a.id, b.id)
        _, c, _ = self.server("--id", UID)
        self.assertEqual(c.id, UID)

    def test_server_combinations(self) -> None:
        for extra in (["--transport", "tcp"],
                      ["--transport", "tcp", "--header", "http", "--host", "a.com",
                       "--path", "/x,/y"],
                      ["--transport", "kcp", "--seed", "s"],
                      ["--transport", "ws", "--path", "/ws", "--host", "h.example"],
                      ["--transport", "ws", "--tls", "--sni", "v.example"],
                      ["--transport", "tcp", "--tls", "--alpn", "h2,http/1.1"]):
            config, link, err = self.server(*extra)
            self.check_pair(config, link)
            if "--tls" in extra:
                self.assertTrue(link.allow_insecure)
                self.assertIn("self-signed", err)

    def test_server_ws_gets_random_path(self) -> None:
        _, link, _ = self.server("--transport", "ws")
        self.assertRegex(link.path, "^/[0-9a-f]{8}$")

    def test_server_cert_files(self) -> None:
        config, link, _ = self.server("--transport", "tcp", "--cert", "/c.pem", "--key", "/k.pem",
                                      "--sni", "real.example")
        self.assertEqual((link.tls, link.allow_insecure, link.sni), ("tls", False, "real.example"))
        self.assertEqual(config["inbounds"][0]["streamSettings"]["tlsSettings"],
                         {"certificates": [{"certificateFile": "/c.pem", "keyFile": "/k.pem"}]})

    def test_server_tls_idn(self) -> None:
        """A non-ASCII name goes into the self-signed certificate as its A-label."""
        from cryptography import x509

        config, link, _ = self.server("--tls", "--sni", "b\u00fccher.test")
        self.assertEqual(link.sni, "b\u00fccher.test")
        pem = "\n".join(config["inbounds"][0]["streamSettings"]["tlsSettings"]
                        ["certificates"][0]["certificate"])
        cert = x509.load_pem_x509_certificate(pem.encode())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        self.assertIn("xn--bcher-kva.test", names.get_values_for_type(x509.DNSName))

    def test_server_stdout(self) -> None:
        """Without -o the config alone is on stdout (``> server.json`` is valid JSON), the
        link on stderr."""
        status, out, err = self.run_cli("config", "server", "--transport", "kcp", "--url")
        self.assertEqual(status, 0)
        config = json.loads(out)
        [link] = [line[len("link: "):] for line in err.splitlines() if line.startswith("link: ")]
        self.assertTrue(link.startswith("vmess://"))
        self.check_pair(config, parse_link(link))

    def test_server_errors(self) -> None:
        for extra, message in (
            (["--transport", "tcp", "--header", "dtls"],
             "bad server options: --header: tcp headers are none, http; got 'dtls'"),
            (["--transport", "kcp", "--header", "http"],
             "bad server options: --header: mKCP headers are none, srtp, utp, wechat-video, "
             "dtls, wireguard; got 'http'"),
            (["--transport", "ws", "--seed", "x"],
             "bad server options: --seed: only mKCP has a seed"),
            (["--port", "0"], "invalid vmess link: port: port out of range 1-65535: 0"),
            (["--id", "nope"], "invalid vmess link: id: not a valid UUID: 'nope'"),
            (["--cert", "/c.pem"], "--cert and --key go together"),
            (["--tls", "--sni", "\u00fc" * 70 + ".test"],
             "bad server options: --sni: cannot go in a certificate: encoding with 'idna' codec "
             "failed (UnicodeError: label empty or too long)"),
        ):
            self.assertEqual(self.run_cli("config", "server", *extra),
                             (2, "", f"vtwist: {message}\n"), extra)


class RealCheckTests(CLITestCase):
    """``check`` with the real runner on the configs this CLI generates."""

    def test_generated_configs_check_ok(self) -> None:
        for extra in (["--transport", "kcp", "--header", "dtls"], ["--transport", "ws", "--tls"],
                      ["--transport", "tcp", "--header", "http"]):
            path = self.mktemp()
            status, out, err = self.run_cli("config", "server", *extra, "-o", path)
            self.assertEqual(status, 0, err)
            self.assertEqual(self.run_cli("check", path)[:2], (0, "Configuration OK.\n"))
            client = self.mktemp()
            self.assertEqual(self.run_cli("config", "from-link", out.strip(), "-o", client)[0], 0)
            self.assertEqual(self.run_cli("check", client)[:2], (0, "Configuration OK.\n"))

    def test_config_flag_as_run_takes_it(self) -> None:
        """``check --config FILE`` / ``-c FILE`` (as ``run`` and ``v2ray -test -config``);
        none or two files is a usage error."""
        path = self.mktemp()
        self.assertEqual(self.run_cli("config", "server", "-o", path)[0], 0)
        for argv in (["--config", path], ["-c", path]):
            self.assertEqual(self.run_cli("check", *argv)[:2], (0, "Configuration OK.\n"))
        for argv in ([], [path, "-c", path]):
            status, out, err = self.run_cli("check", *argv)
            self.assertEqual((status, out), (cli.EXIT_USAGE, ""))
            self.assertIn("one config file", err)

    def test_invalid_config_fails(self) -> None:
        path = self.write(json.dumps({"outbounds": [{"protocol": "carrier-pigeon"}]}))
        status, out, err = self.run_cli("check", path)
        self.assertEqual((status, out), (1, ""))
        self.assertIn("carrier-pigeon", err)


class RunCheckTests(CLITestCase):
    """``run`` and ``check`` hand a config dict to the runner."""

    def setUp(self) -> None:
        self.ran: list[dict[str, Any]] = []
        self.patch(runner, "run_config", lambda config, *_: self.ran.append(config) or 0)

    def test_run_link(self) -> None:
        self.assertEqual(self.run_cli("run", "--link", LOCAL_LINK), (0, "", ""))
        self.assertEqual(self.ran, [client_config_from_link(LOCAL_LINK)])

    def test_run_link_socks(self) -> None:
        self.run_cli("run", "--link", LOCAL_LINK, "--socks", "127.0.0.1:9999")
        self.assertEqual(self.ran[0]["inbounds"][0]["port"], 9999)

    def test_run_subscription(self) -> None:
        body = encode_subscription(["ss://x@h:1", b64link(fields(ps="a")),
                                          b64link(fields(ps="b", net="ws"))])
        path = self.write(body)
        status, _, err = self.run_cli("run", "--subscription", path, "--pick", "b")
        self.assertEqual(status, 0)
        self.assertEqual(err, "warning: subscription line 1: skipped (malformed): invalid ss "
                              "link: userinfo: not base64 of UTF-8 text (expected "
                              "ss://base64url(method:password)@host:port#name)\n")
        self.assertEqual(self.ran[0]["outbounds"][0]["tag"], "b")
        self.run_cli("run", "--subscription", path)
        self.assertEqual(self.ran[1]["outbounds"][0]["tag"], "a")

    def test_run_config_and_default(self) -> None:
        config = client_config_from_link(LOCAL_LINK)
        path = self.write(json.dumps(config))
        self.run_cli("run", "--config", path)
        self.run_cli("run")
        self.assertEqual(self.ran, [config, runner.default_config()])

    def test_run_errors(self) -> None:
        for argv, status, message in (
            (["--link", LOCAL_LINK, "--config", "x"], 2,
             "use only one of --config, --link, --subscription"),
            (["--link", LOCAL_LINK, "--pick", "x"], 2, "--pick goes with --subscription"),
            (["--config", "x", "--socks", "1"], 2,
             "--socks goes with --link or --subscription (a config names its inbounds)"),
            (["--link", "vmess://e30"], 2, "invalid vmess link: add: is missing (the server "
                                           "address)"),
            (["--subscription", os.path.join(self.mktemp(), "none")], 2, None),
        ):
            status_got, out, err = self.run_cli("run", *argv)
            self.assertEqual((status_got, out), (status, ""), argv)
            if message:
                self.assertEqual(err, f"vtwist: {message}\n")
        self.assertEqual(self.ran, [])

    def test_run_missing_config_file(self) -> None:
        status, _, err = self.run_cli("run", "--config", os.path.join(self.mktemp(), "x.json"))
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith("vtwist: config error: cannot read"), err)

    def test_files_that_are_not_utf8(self) -> None:
        """Binary junk as a config or subscription is one line, not a UnicodeDecodeError."""
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\xff\xfe{}")
        self.assertEqual(self.run_cli("run", "--config", path),
                         (1, "", f"vtwist: config error: cannot read {path}: not UTF-8 text "
                                 "(byte 0)\n"))
        self.assertEqual(self.run_cli("run", "--subscription", path),
                         (2, "", f"vtwist: cannot read {path}: not UTF-8 text (byte 0)\n"))

    def test_run_status_passes_through(self) -> None:
        self.patch(runner, "run_config", lambda config, *_: 3)
        self.assertEqual(self.run_cli("run", "--link", LOCAL_LINK)[0], 3)

    def test_check_delegates(self) -> None:
        checked: list[dict[str, Any]] = []
        self.patch(runner, "check_config", lambda config: checked.append(config) or 1)
        path = self.write("/* comment */ {\"outbounds\": []}")
        self.assertEqual(self.run_cli("check", path)[0], 1)
        self.assertEqual(checked, [{"outbounds": []}])
        status, _, err = self.run_cli("check", os.path.join(self.mktemp(), "x.json"))
        self.assertEqual(status, 1)
        self.assertIn("cannot read", err)
