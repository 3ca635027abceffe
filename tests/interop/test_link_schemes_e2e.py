"""End to end for ``ss://``, ``vless://`` and ``trojan://``: a server (vtwist or V2Ray 4.34)
runs a config, a link written for it starts the client (``python -m vtwist run --link LINK``
or ``--subscription FILE --pick NAME``), and curl fetches a blob through both.

The links are written by hand, the way a provider would hand them out, so the test checks
the parser on real link text rather than on what vtwist's own emitter writes. Everything
stays on 127.0.0.1 (every config is checked before anything starts).
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from typing import Any

from tests.interop.test_link_e2e import BLOB, LinkCase
from tests.interop.v2ray_runner import read_child_log
from tests.netutil import free_port, wait_for_port
from vtwist.genconfig import self_signed_certificate
from vtwist.share.schemes import parse_link
from vtwist.share.subscription import encode_subscription

UUID = str(uuid.uuid4())
PASSWORD = "s3cret:p@ss/word"


def tls_stream(network: str = "tcp", path: str = "") -> dict[str, Any]:
    """A server's streamSettings: ``network`` under TLS with a fresh self-signed certificate
    for localhost (``path`` for ws)."""
    cert, key = self_signed_certificate(["localhost"])
    stream: dict[str, Any] = {
        "network": network, "security": "tls",
        "tlsSettings": {"certificates": [{"certificate": cert.splitlines(),
                                          "key": key.splitlines()}]},
    }
    if network == "ws":
        stream["wsSettings"] = {"path": path}
    return stream


def server_config(port: int, protocol: str, settings: dict[str, Any],
                  stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """One inbound of ``protocol`` on 127.0.0.1:``port``, freedom out."""
    inbound: dict[str, Any] = {"tag": "in", "listen": "127.0.0.1", "port": port,
                               "protocol": protocol, "settings": settings}
    if stream is not None:
        inbound["streamSettings"] = stream
    return {"log": {"loglevel": "warning"}, "inbounds": [inbound],
            "outbounds": [{"tag": "direct", "protocol": "freedom", "settings": {}}]}


def ss_server(port: int, method: str) -> dict[str, Any]:
    return server_config(port, "shadowsocks", {"method": method, "password": PASSWORD,
                                               "network": "tcp,udp"})


def trojan_server(port: int, stream: dict[str, Any]) -> dict[str, Any]:
    return server_config(port, "trojan", {"clients": [{"password": PASSWORD}]}, stream)


def vless_server(port: int, stream: dict[str, Any]) -> dict[str, Any]:
    return server_config(port, "vless", {"clients": [{"id": UUID}], "decryption": "none"},
                         stream)


def quoted_password() -> str:
    return PASSWORD.replace("%", "%25").replace(":", "%3A").replace("@", "%40").replace(
        "/", "%2F")


class LinkSchemesEndToEndTests(LinkCase):
    """Each scheme: a link for a running server -> ``vtwist run --link`` -> curl."""

    def through(self, config: dict[str, Any], port: int, link: str, real: bool) -> None:
        parse_link(link).canonical()  # a link the test means to be valid
        server = self.serve(config, port, real)
        client, socks = self.run_client(link)
        self.curl(socks, [server, client])

    # -- Shadowsocks ------------------------------------------------------------------------
    def test_ss_sip002_vtwist_server(self) -> None:
        port = free_port(udp_too=True)
        userinfo = base64.urlsafe_b64encode(f"aes-128-gcm:{PASSWORD}".encode()).decode()
        link = f"ss://{userinfo.rstrip('=')}@127.0.0.1:{port}#ss-aes-128-gcm"
        self.through(ss_server(port, "aes-128-gcm"), port, link, real=False)

    def test_ss_plain_userinfo_v2ray_server(self) -> None:
        port = free_port(udp_too=True)
        link = f"ss://aes-256-gcm:{quoted_password()}@127.0.0.1:{port}/?#ss%20plain"
        self.through(ss_server(port, "aes-256-gcm"), port, link, real=True)

    def test_ss_legacy_v2ray_server(self) -> None:
        port = free_port(udp_too=True)
        body = base64.b64encode(
            f"chacha20-ietf-poly1305:{PASSWORD}@127.0.0.1:{port}".encode()).decode()
        self.through(ss_server(port, "chacha20-poly1305"), port, f"ss://{body}#legacy",
                     real=True)

    # -- Trojan -------------------------------------------------------------------------------
    def test_trojan_tls_vtwist_server(self) -> None:
        port = free_port()
        link = (f"trojan://{quoted_password()}@127.0.0.1:{port}?sni=localhost"
                "&allowInsecure=1#trojan")
        self.through(trojan_server(port, tls_stream()), port, link, real=False)

    def test_trojan_ws_tls_v2ray_server(self) -> None:
        port = free_port()
        link = (f"trojan://{quoted_password()}@127.0.0.1:{port}?security=tls&type=ws"
                "&path=%2Ftj&host=localhost&allowInsecure=1#trojan-ws")
        self.through(trojan_server(port, tls_stream("ws", "/tj")), port, link, real=True)

    # -- VLESS --------------------------------------------------------------------------------
    def test_vless_tls_vtwist_server(self) -> None:
        port = free_port()
        link = (f"vless://{UUID}@127.0.0.1:{port}?type=tcp&encryption=none&security=tls"
                "&sni=localhost&allowInsecure=1&fp=chrome#vless")
        self.through(vless_server(port, tls_stream()), port, link, real=False)

    def test_vless_ws_tls_v2ray_server(self) -> None:
        port = free_port()
        link = (f"vless://{UUID}@127.0.0.1:{port}?type=ws&security=tls&path=%2Fvl"
                "&host=localhost&alpn=http%2F1.1&allowInsecure=1#vless-ws")
        self.through(vless_server(port, tls_stream("ws", "/vl")), port, link, real=True)

    # -- a mixed subscription -------------------------------------------------------------------
    def test_subscription_pick_each_scheme(self) -> None:
        """One subscription with a link of each scheme (and lines to skip); ``--pick``
        starts the client for each in turn, against its own server."""
        ports = {name: free_port(udp_too=True) for name in ("ss", "trojan", "vless")}
        links = {
            "ss": f"ss://aes-128-gcm:{quoted_password()}@127.0.0.1:{ports['ss']}#pick-ss",
            "trojan": f"trojan://{quoted_password()}@127.0.0.1:{ports['trojan']}"
                      "?sni=localhost&allowInsecure=1#pick-trojan",
            "vless": f"vless://{UUID}@127.0.0.1:{ports['vless']}?security=tls&sni=localhost"
                     "&allowInsecure=1#pick-vless",
        }
        body = encode_subscription(["hysteria2://x@127.0.0.1:1#skip",
                                    f"vless://{UUID}@127.0.0.1:1?type=ds#skip-ds",
                                    *links.values()])
        path = os.path.join(self.dir, "subscription.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(body)
        servers = [
            self.serve(ss_server(ports["ss"], "aes-128-gcm"), ports["ss"]),
            self.serve(trojan_server(ports["trojan"], tls_stream()), ports["trojan"], True),
            self.serve(vless_server(ports["vless"], tls_stream()), ports["vless"]),
        ]
        for name in links:
            socks = free_port()
            client = self.spawn_vtwist(f"client-{name}", "--subscription", path, "--pick",
                                       f"pick-{name}", "--socks", f"127.0.0.1:{socks}")
            wait_for_port(socks, timeout=10, alive=client.check_alive)
            self.curl(socks, [*servers, client])
            log = read_child_log(client.log)  # type: ignore[attr-defined]
            self.assertIn("subscription line 1: skipped (unknown scheme hysteria2://", log)
            self.assertIn("subscription line 2: skipped (unsupported network)", log)
            client.stop()

    # -- the check can fail -----------------------------------------------------------------
    def test_wrong_password_gets_nothing(self) -> None:
        """A link whose password the server does not know carries no traffic (trojan, ss)."""
        url = f"http://127.0.0.1:{self.http.server_address[1]}/blob"
        ports = {"trojan": free_port(), "ss": free_port(udp_too=True)}
        self.serve(trojan_server(ports["trojan"], tls_stream()), ports["trojan"])
        self.serve(ss_server(ports["ss"], "aes-128-gcm"), ports["ss"])
        for link in (f"trojan://wrong@127.0.0.1:{ports['trojan']}?sni=localhost"
                     "&allowInsecure=1",
                     f"ss://aes-128-gcm:wrong@127.0.0.1:{ports['ss']}"):
            _, socks = self.run_client(link)
            done = subprocess.run(
                ["curl", "-sS", "--max-time", "5", "--socks5-hostname", f"127.0.0.1:{socks}",
                 url], capture_output=True, timeout=20)
            self.assertNotEqual(done.returncode, 0, link)
            self.assertNotEqual(done.stdout, BLOB, link)
