"""The v2fly "VLESS-TCP-TLS-WS (recommended)" server layout, run as written, on vtwist.

The layout (v2fly/v2ray-examples ``VLESS-TCP-TLS-WS (recommended)/config_server.json``;
Xray-examples ``VLESS-TCP-TLS-WS`` is the same): a VLESS inbound on tcp+tls (ALPN http/1.1)
whose fallbacks send everything that is not VLESS to a web server (``"dest": 80``) and the
path ``/websocket`` with a PROXY v1 header (``xver`` 1) to a second VLESS inbound on
127.0.0.1:1234 over plain ws with ``acceptProxyProtocol``. The config text below keeps every
key, value and the ``//`` comments of the example's shape; only the ports, the UUID and the
certificate paths are substituted. A second layout adds the UNIX-socket forms that fallback
setups use (Xray-examples ``All-in-One-fallbacks``): ``/vmws`` with ``xver`` 2 to a VMess ws
inbound listening on an abstract socket ``@name``, ``/vlws`` to a VLESS ws inbound on a
socket path.

The clients are the example's own client configs (``config_client_tcp_tls.json`` and
``config_client_ws_tls.json``: socks with udp -> vless over tcp+tls or ws+tls), with the
server address, port, UUID and the test CA substituted. vtwist and V2Ray 4.34 clients, each
route: 8 MB echoed with sha256 both ways and a UDP echo. V2Ray 4.34 runs the same server
text as the reference; the web server behind ``"dest": 80`` answers curl.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.interop.transport_support import SERVER_NAME, TransportTestCase
from tests.interop.v2ray_runner import EchoServer
from tests.interop.vmess_harness import socks_echo, socks_udp_echo
from tests.netutil import free_port
from tests.services import serve_web, start_service
from vtwist.config.loader import loads

SIZE = 8 * 1024 * 1024

#: the example's server config: ports, id and certificate paths are the only substitutions
SERVER = """{
    "log": {
        "loglevel": "warning"
    },
    "inbounds": [
        {
            "port": __PORT__,
            "protocol": "vless",
            "settings": {
                "clients": [
                    {
                        "id": "__UUID__", // your UUID
                        "level": 0,
                        "email": "love@v2fly.org"
                    }
                ],
                "decryption": "none",
                "fallbacks": [
                    {
                        "dest": __WEB__
                    },
                    {
                        "path": "/websocket", // your own path
                        "dest": __WS__,
                        "xver": 1
                    }__MORE_FALLBACKS__
                ]
            },
            "streamSettings": {
                "network": "tcp",
                "security": "tls",
                "tlsSettings": {
                    "alpn": [
                        "http/1.1"
                    ],
                    "certificates": [
                        {
                            "certificateFile": "__CERT__", // absolute path
                            "keyFile": "__KEY__" // absolute path
                        }
                    ]
                }
            }
        },
        {
            "port": __WS__,
            "listen": "127.0.0.1",
            "protocol": "vless",
            "settings": {
                "clients": [
                    {
                        "id": "__UUID__", // your UUID
                        "level": 0,
                        "email": "love@v2fly.org"
                    }
                ],
                "decryption": "none"
            },
            "streamSettings": {
                "network": "ws",
                "security": "none",
                "wsSettings": {
                    "acceptProxyProtocol": true, // remove behind Nginx/Caddy
                    "path": "/websocket" // the same path as above
                }
            }
        }__MORE_INBOUNDS__
    ],
    "outbounds": [
        {
            "protocol": "freedom"
        }
    ]
}
"""

#: the UNIX-socket fallbacks (Xray-examples All-in-One shape)
UNIX_FALLBACKS = """,
                    {
                        "path": "/vmws", // to the vmess-ws listener
                        "dest": "__ABSTRACT__",
                        "xver": 2
                    },
                    {
                        "path": "/vlws",
                        "dest": "__SOCKPATH__",
                        "xver": 1
                    }"""

UNIX_INBOUNDS = """,
        {
            "listen": "__ABSTRACT__",
            "protocol": "vmess",
            "settings": {
                "clients": [
                    {
                        "id": "__UUID__",
                        "level": 0,
                        "email": "vmess-ws@example.com"
                    }
                ]
            },
            "streamSettings": {
                "network": "ws",
                "security": "none",
                "wsSettings": {
                    "acceptProxyProtocol": true,
                    "path": "/vmws"
                }
            }
        },
        {
            "listen": "__SOCKPATH__",
            "protocol": "vless",
            "settings": {
                "clients": [
                    {
                        "id": "__UUID__",
                        "level": 0,
                        "email": "vless-ws@example.com"
                    }
                ],
                "decryption": "none"
            },
            "streamSettings": {
                "network": "ws",
                "security": "none",
                "wsSettings": {
                    "acceptProxyProtocol": true,
                    "path": "/vlws"
                }
            }
        }"""

#: the example's client configs (tcp+tls and ws+tls): the server, id and CA substituted
CLIENT = """{
    "log": {
        "loglevel": "warning"
    },
    "inbounds": [
        {
            "port": __SOCKS__,
            "listen": "127.0.0.1",
            "protocol": "socks",
            "settings": {
                "udp": true
            }
        }
    ],
    "outbounds": [
        {
            "protocol": "__PROTOCOL__",
            "settings": {
                "vnext": [
                    {
                        "address": "127.0.0.1", // your domain or server IP
                        "port": __PORT__,
                        "users": [
                            {
                                "id": "__UUID__", // your UUID
                                "encryption": "none",
                                "level": 0
                            }
                        ]
                    }
                ]
            },
            "streamSettings": {
                "network": "__NETWORK__",
                "security": "tls",
                "tlsSettings": {
                    "serverName": "__NAME__", // your domain
                    "certificates": [{"certificateFile": "__CA__", "usage": "verify"}]
                }__WS_SETTINGS__
            }
        }
    ]
}
"""


def fill(text: str, **values: Any) -> str:
    """``text`` with each ``__KEY__`` replaced by its value."""
    for key, value in values.items():
        text = text.replace(f"__{key}__", str(value))
    left = re.findall(r"__(?!MORE|WS_SETTINGS)[A-Z_]+__", text)
    assert not left, (left, text)  # (a temporary path may hold "__" of its own)
    return text


class VLESSTcpTlsWsExample(TransportTestCase):
    """The example's server on vtwist (and V2Ray 4.34) with vtwist and V2Ray clients."""

    timeout = 180

    def setUp(self) -> None:
        super().setUp()
        self.echo = EchoServer()
        self.addCleanup(self.echo.stop)
        self.uuid = str(uuid.uuid4())
        self.port = free_port()
        self.ws = free_port()
        self.web = serve_web(self, {b"": b"the web site"})
        tag = uuid.uuid4().hex[:8]
        self.abstract = f"@vless-example-vmess-ws-{tag}"
        self.sockpath = os.path.join(self.fx.dir, "vless-ws.sock")

    def server_text(self, unix: bool) -> str:
        text = SERVER.replace("__MORE_FALLBACKS__", UNIX_FALLBACKS if unix else "")
        text = text.replace("__MORE_INBOUNDS__", UNIX_INBOUNDS if unix else "")
        return fill(text, PORT=self.port, UUID=self.uuid, WEB=self.web, WS=self.ws,
                    CERT=self.fx.cert_file, KEY=self.fx.key_file, ABSTRACT=self.abstract,
                    SOCKPATH=self.sockpath)

    def client_text(self, socks: int, route: str) -> str:
        """The client config for ``route``: tcp (VLESS straight into the tcp+tls inbound)
        or a ws path (through the fallback)."""
        ws = ""
        if route != "tcp":
            ws = f',\n                "wsSettings": {{"path": "{route}"}}'
        return fill(CLIENT.replace("__WS_SETTINGS__", ws), SOCKS=socks, PORT=self.port,
                    UUID=self.uuid, NAME=SERVER_NAME, CA=self.fx.ca_file,
                    NETWORK="tcp" if route == "tcp" else "ws",
                    PROTOCOL="vmess" if route == "/vmws" else "vless")

    async def start(self, who: str, text: str, port: int) -> None:
        config = loads(text)
        if who == "vtwist":
            await start_service(config, self)
        else:
            await self.v2ray(config).wait_port(port)

    async def curl(self) -> bytes:
        out, err, code = await getProcessOutputAndValue("curl", [
            "-sS", "--max-time", "10", "--cacert", self.fx.ca_file,
            "--resolve", f"{SERVER_NAME}:{self.port}:127.0.0.1",
            f"https://{SERVER_NAME}:{self.port}/"], env=dict(os.environ))
        self.assertEqual(code, 0, err)
        return out  # type: ignore[no-any-return]

    async def check(self, server: str, unix: bool = False) -> None:
        await self.start(server, self.server_text(unix), self.port)
        self.assertEqual(await self.curl(), b"the web site")
        routes = ["tcp", "/websocket"] + (["/vmws", "/vlws"] if unix else [])
        for client in ("vtwist", "v2ray"):
            for route in routes:
                socks = free_port()
                await self.start(client, self.client_text(socks, route), socks)
                sent, got, _ = await socks_echo(reactor, socks, "127.0.0.1", self.echo.port,
                                                SIZE)
                self.assertEqual(got, sent, f"{client} client, {route}: echo differs")
                payloads = [os.urandom(n) for n in (1, 600, 1400)]
                echoed = await socks_udp_echo(reactor, socks, "127.0.0.1", self.echo.port,
                                              payloads)
                self.assertEqual(echoed, payloads, f"{client} client, {route}: UDP")

    async def test_vtwist_server(self) -> None:
        """The example as written on vtwist: both clients over tcp+tls and ws+tls."""
        await self.check("vtwist")

    async def test_vtwist_server_unix_sockets(self) -> None:
        """Plus the fallbacks to ws inbounds on an abstract socket and a socket path."""
        await self.check("vtwist", unix=True)

    async def test_v2ray_server_reference(self) -> None:
        """The same text on V2Ray 4.34 (the reference for the layout and the clients)."""
        await self.check("v2ray", unix=True)
