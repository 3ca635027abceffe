"""End to end: a server from ``vtwist config server``, a client from the link it prints.

Each test makes the server config and link with the CLI, runs the server
(``python -m vtwist run --config`` or the real ``v2ray``), starts the client straight from
the link (``python -m vtwist run --link LINK --socks ...``, or ``v2ray`` on the output of
``vtwist config from-link``), then fetches a blob from a local HTTP server with
``curl --socks5-hostname`` through it. Everything stays on 127.0.0.1: every address in
every config is checked to be loopback before any process starts.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.interop.v2ray_runner import Subprocess, V2Ray, read_child_log
from tests.netutil import free_port, wait_for_port, wait_for_udp_bound
from tests.test_links import DESIGN_LINK, UID
from vtwist import cli
from vtwist.genconfig import client_config_from_link, client_config_from_subscription
from vtwist.share.link import VmessLink, parse_link
from vtwist.share.subscription import encode_subscription

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BLOB = os.urandom(256 * 1024)


class _Blob(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        self.wfile.write(BLOB)

    def log_message(self, *args: Any) -> None:
        pass


def assert_loopback(config: dict[str, Any]) -> None:
    """Refuse a config that would listen on or dial anything but loopback."""
    for inbound in config.get("inbounds", []):
        if not ipaddress.ip_address(inbound["listen"]).is_loopback:
            raise AssertionError(f"inbound listens on {inbound['listen']}")
    for outbound in config.get("outbounds", []):
        settings = outbound.get("settings", {})
        for server in settings.get("vnext", []) + settings.get("servers", []):
            if not ipaddress.ip_address(server["address"]).is_loopback:
                raise AssertionError(f"outbound dials {server['address']}")


class LinkCase(SynchronousTestCase):
    """A local HTTP server with a blob, a scratch directory, and the pieces that start a
    server and a client from a link and curl the blob through them."""

    def setUp(self) -> None:
        if shutil.which("curl") is None:
            raise AssertionError("curl is missing: apt-get install -y curl")
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), _Blob)
        thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(self.http.server_close)
        self.addCleanup(self.http.shutdown)
        self.dir = tempfile.mkdtemp(prefix="vtwist-link-e2e-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get(
            "PYTHONPATH", "")}

    # -- pieces ---------------------------------------------------------------------------
    def make_server(self, *args: str) -> tuple[str, VmessLink, int]:
        """``vtwist config server ARGS``: (config path, parsed link, port)."""
        port = free_port(udp_too=True)
        path = os.path.join(self.dir, "server.json")
        out = io.StringIO()
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        status = cli.main(["config", "server", *args, "--port", str(port), "--listen",
                           "127.0.0.1", "--address", "127.0.0.1", "-o", path], out)
        self.assertEqual(status, 0, err.getvalue())
        with open(path, encoding="utf-8") as f:
            assert_loopback(json.load(f))
        return path, parse_link(out.getvalue().strip()), port

    def log_file(self, name: str) -> Any:
        f = open(os.path.join(self.dir, name), "w+b")  # noqa: SIM115
        self.addCleanup(f.close)
        return f

    def spawn_vtwist(self, name: str, *args: str) -> Subprocess:
        log = self.log_file(name + ".log")
        child = Subprocess([sys.executable, "-m", "vtwist", "run", *args], stdout=log,
                           stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        self.addCleanup(child.stop)
        child.log = log  # type: ignore[attr-defined]
        return child

    def run_server(self, path: str, link: VmessLink, real: bool = False) -> Any:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        return self.serve(config, link.port, real, udp=link.net == "kcp")

    def serve(self, config: dict[str, Any], port: int, real: bool = False,
              udp: bool = False) -> Any:
        """Run the server ``config`` (loopback only) in V2Ray 4.34 (``real``) or in
        ``vtwist run --config``; return once ``port`` is taken (UDP for ``udp``)."""
        assert_loopback(config)
        if real:
            server: Any = V2Ray(config)
            self.addCleanup(server.stop)
        else:
            path = os.path.join(self.dir, f"server-{port}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(config, f)
            server = self.spawn_vtwist(f"server-{port}", "--config", path)
        # A client must not start before the server's port is taken (mKCP: UDP).
        wait = wait_for_udp_bound if udp else wait_for_port
        wait(port, timeout=10, alive=server.check_alive)
        return server

    def run_client(self, link_text: str, real: bool = False) -> tuple[Any, int]:
        socks = free_port()
        config = client_config_from_link(link_text, f"127.0.0.1:{socks}")
        assert_loopback(config)
        if real:
            client = V2Ray(config, [socks])
            self.addCleanup(client.stop)
            return client, socks
        client = self.spawn_vtwist("client", "--link", link_text, "--socks",
                                   f"127.0.0.1:{socks}")
        wait_for_port(socks, timeout=10, alive=client.check_alive)
        return client, socks

    def curl(self, socks: int, procs: list[Any]) -> None:
        url = f"http://127.0.0.1:{self.http.server_address[1]}/blob"
        last = ""
        for _ in range(4):
            done = subprocess.run(
                ["curl", "-sS", "--max-time", "10", "--socks5-hostname", f"127.0.0.1:{socks}",
                 url], capture_output=True, timeout=20)
            if done.returncode == 0 and done.stdout == BLOB:
                return
            last = done.stderr.decode(errors="replace") + f" ({len(done.stdout)} bytes)"
            time.sleep(0.5)
        logs = []
        for p in procs:
            if hasattr(p, "output"):
                logs.append(p.output())
            else:
                logs.append(read_child_log(p.log))
        self.fail(f"curl through the link failed: {last}\n" + "\n---\n".join(logs))

    def round_trip(self, server_args: list[str], real_server: bool = False,
                   real_client: bool = False) -> VmessLink:
        path, link, _ = self.make_server(*server_args)
        text = link.to_link()
        server = self.run_server(path, link, real_server)
        client, socks = self.run_client(text, real_client)
        self.curl(socks, [server, client])
        return link



class LinkEndToEndTests(LinkCase):
    """Server from ``config server``, client from its link, curl through both."""

    def test_tcp(self) -> None:
        link = self.round_trip(["--transport", "tcp"])
        self.assertEqual((link.net, link.tls), ("tcp", ""))

    def test_design_link_kcp_dtls(self) -> None:
        """The design notes' link, its address rewritten to 127.0.0.1 before anything runs."""
        original = parse_link(DESIGN_LINK)
        self.assertEqual((original.net, original.type, original.id), ("kcp", "dtls", UID))
        path, server_link, port = self.make_server("--transport", "kcp", "--header", "dtls",
                                                   "--id", UID)
        local = replace(original, add="127.0.0.1", port=port)
        self.assertEqual(local.add, "127.0.0.1")
        self.assertEqual(local.canonical(), replace(server_link, ps=original.ps))
        server = self.run_server(path, server_link)
        client, socks = self.run_client(local.to_link())
        self.curl(socks, [server, client])

    def test_ws_tls(self) -> None:
        link = self.round_trip(["--transport", "ws", "--tls"])
        self.assertEqual((link.net, link.tls, link.allow_insecure), ("ws", "tls", True))

    def test_tcp_http_header(self) -> None:
        self.round_trip(["--transport", "tcp", "--header", "http", "--host", "example.com",
                         "--path", "/a,/b"])

    def test_real_v2ray_server_kcp_dtls(self) -> None:
        """V2Ray 4.34 runs the generated server config; vtwist's client comes from the link."""
        self.round_trip(["--transport", "kcp", "--header", "dtls", "--seed", "s33d"],
                        real_server=True)

    def test_real_v2ray_client_ws_tls(self) -> None:
        """vtwist serves; V2Ray 4.34 runs the client config ``config from-link`` makes."""
        self.round_trip(["--transport", "ws", "--tls"], real_client=True)

    def test_twistd_subscription_pick(self) -> None:
        """``twistd -n vtwist --subscription FILE --pick NAME --socks ...`` (the plugin)."""
        path, link, _ = self.make_server("--transport", "tcp", "--name", "wanted")
        decoy = replace(link, ps="decoy", port=free_port())
        body = encode_subscription(["ss://YWVzOnB3@127.0.0.1:1#ss", decoy.to_link(),
                                          link.to_link()])
        sub = os.path.join(self.dir, "subscription.txt")
        with open(sub, "w", encoding="utf-8") as f:
            f.write(body)
        config = client_config_from_subscription(body, "wanted", "127.0.0.1:1",
                                                       warn=lambda m: None)
        assert_loopback(config)
        server = self.run_server(path, link)
        socks = free_port()
        log = self.log_file("twistd.log")
        client = Subprocess(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--nodaemon", "--pidfile=", "vtwist",
             "--subscription", sub, "--pick", "wanted", "--socks", f"127.0.0.1:{socks}"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.dir)
        self.addCleanup(client.stop)
        client.log = log  # type: ignore[attr-defined]
        wait_for_port(socks, timeout=10, alive=client.check_alive)
        self.curl(socks, [server, client])

    def test_blob_is_checked(self) -> None:
        """The check can fail: a client pointed at a closed port gets nothing."""
        closed = free_port()
        link = VmessLink(add="127.0.0.1", port=closed, id=UID).to_link()
        client, socks = self.run_client(link)
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "5", "--socks5-hostname", f"127.0.0.1:{socks}",
             f"http://127.0.0.1:{self.http.server_address[1]}/blob"], capture_output=True,
            timeout=20)
        self.assertNotEqual(done.returncode, 0)
        self.assertNotEqual(done.stdout, BLOB)
