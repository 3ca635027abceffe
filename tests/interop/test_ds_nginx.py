"""vtwist behind a real nginx on UNIX sockets, as servers are deployed.

* WebSocket: nginx terminates TLS and ``proxy_pass``\\ es a ws location to
  ``http://unix:/…/vmess-ws.sock``, where vtwist's VMess inbound listens (``listen`` is the
  socket's path, network ws). Clients: vtwist and V2Ray 4.34, VMess over wss to nginx.
* Domain socket: nginx's stream module terminates TLS and passes the bytes to
  ``unix:/…/vmess.sock``, where vtwist's VMess inbound listens with ``network:
  domainsocket``. Clients: vtwist and V2Ray 4.34, VMess over tcp+tls to nginx.

Each moves 20 MB each way with sha256 and a UDP echo. Skipped only when nginx itself is not
installed (tools/test.sh installs nginx-light and libnginx-mod-stream).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from twisted.internet import reactor

from tests.interop.test_transport_quic_ds import SECURITY, UUID, server_config
from tests.interop.transport_support import (
    SERVER_NAME,
    TransportTestCase,
    vmess_socks_client_config,
)
from tests.interop.v2ray_runner import EchoServer, Subprocess
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port, wait_for_port_async
from tests.services import start_service

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                  else None)
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
SIZE = 20 * 1024 * 1024


class NginxFrontTests(TransportTestCase):
    """nginx (TLS) -> UNIX socket -> vtwist's VMess inbound."""

    timeout = 180
    echo: EchoServer
    if NGINX is None:
        skip = "nginx is not installed (apt-get install nginx-light libnginx-mod-stream)"

    def setUp(self) -> None:
        super().setUp()
        cls = type(self)
        if "echo" not in cls.__dict__:
            cls.echo = EchoServer()

    async def nginx(self, body: str, port: int, stream: bool = False) -> None:
        """Run nginx in the foreground (one process) with ``body`` as its config's core."""
        prefix = os.path.join(self.fx.dir, "nginx")
        os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
        config = os.path.join(prefix, "nginx.conf")
        with open(config, "w") as f:
            f.write(f"""
{f"load_module {STREAM_MODULE};" if stream else ""}
daemon off;
master_process off;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 256; }}
{body}
""")
        proc = Subprocess([NGINX, "-p", prefix, "-c", config], stdout=subprocess.DEVNULL,
                          stderr=subprocess.STDOUT)
        self.addCleanup(proc.stop)

        def alive() -> None:
            if proc.proc.poll() is not None:
                with open(os.path.join(prefix, "logs", "error.log")) as log:
                    raise AssertionError(f"nginx exited: {log.read()}")

        await wait_for_port_async(port, 15, alive=alive)

    def tls_client(self, stream: dict[str, Any]) -> dict[str, Any]:
        stream["security"] = "tls"
        stream["tlsSettings"] = self.fx.tls_client()
        return stream

    async def client(self, who: str, nginx_port: int, stream: dict[str, Any]) -> int:
        socks = free_port(udp_too=True)
        config = vmess_socks_client_config(socks, nginx_port, UUID, SECURITY, stream)
        if who == "vtwist":
            await start_service(config, self)
        else:
            await self.v2ray(config).wait_port(socks)
        return socks

    async def check(self, socks: int) -> None:
        sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", self.echo.port, SIZE,
                                        timeout=120)
        self.assertEqual(got, sent, "20 MB echo through nginx differs")
        payloads = [os.urandom(n) for n in (1, 100, 1024)]
        echoed = await socks_udp_echo(reactor, socks, "127.0.0.1", self.echo.port, payloads)
        self.assertEqual(echoed, payloads)

    async def ws_behind_nginx(self, client: str) -> None:
        sock = os.path.join(self.fx.dir, "vmess-ws.sock")
        server = server_config(1, {"network": "ws", "wsSettings": {"path": "/vmess"}})
        server["inbounds"][0]["listen"] = sock
        await start_service(server, self)
        port = free_port()
        await self.nginx(f"""
http {{
    access_log off;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {SERVER_NAME};
        ssl_certificate {self.fx.cert_file};
        ssl_certificate_key {self.fx.key_file};
        location /vmess {{
            proxy_pass http://unix:{sock};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 300s;
        }}
        location / {{ return 404; }}
    }}
}}""", port)
        stream = self.tls_client({"network": "ws", "wsSettings": {
            "path": "/vmess", "headers": {"Host": SERVER_NAME}}})
        await self.check(await self.client(client, port, stream))

    async def ds_behind_nginx_stream(self, client: str) -> None:
        if not os.path.exists(STREAM_MODULE):
            self.skipTest("nginx's stream module is not installed (libnginx-mod-stream)")
        sock = os.path.join(self.fx.dir, "vmess.sock")
        await start_service(server_config(1, {"network": "domainsocket",
                                              "dsSettings": {"path": sock}}), self)
        port = free_port()
        await self.nginx(f"""
stream {{
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {self.fx.cert_file};
        ssl_certificate_key {self.fx.key_file};
        proxy_pass unix:{sock};
    }}
}}""", port, stream=True)
        await self.check(await self.client(client, port, self.tls_client({"network": "tcp"})))

    async def test_ws_vtwist_client(self) -> None:
        """vtwist client -> wss -> nginx -> ws on a UNIX socket -> vtwist server."""
        await self.ws_behind_nginx("vtwist")

    async def test_ws_v2ray_client(self) -> None:
        """V2Ray client -> wss -> nginx -> ws on a UNIX socket -> vtwist server."""
        await self.ws_behind_nginx("v2ray")

    async def test_domainsocket_vtwist_client(self) -> None:
        """vtwist client -> tcp+tls -> nginx stream -> domainsocket -> vtwist server."""
        await self.ds_behind_nginx_stream("vtwist")

    async def test_domainsocket_v2ray_client(self) -> None:
        """V2Ray client -> tcp+tls -> nginx stream -> domainsocket -> vtwist server."""
        await self.ds_behind_nginx_stream("v2ray")
