"""V2Ray-format JSON configs shared by vtwist and V2Ray in the benchmarks.

Both implementations get the very same config, so any difference is the implementation's.
"""

from __future__ import annotations

from typing import Any

UUID = "b831381d-6324-4d53-ad4f-8cda48b30811"


def log_section(access_path: str) -> dict[str, Any]:
    """Warnings only; access lines to a file (both write one line per connection)."""
    return {"loglevel": "warning", "access": access_path}


def socks_inbound(port: int) -> dict[str, Any]:
    """SOCKS5 without auth on 127.0.0.1:``port``."""
    return {"tag": "socks-in", "listen": "127.0.0.1", "port": port, "protocol": "socks",
            "settings": {"auth": "noauth", "udp": False}}


def http_inbound(port: int) -> dict[str, Any]:
    """An HTTP proxy without accounts on 127.0.0.1:``port``."""
    return {"tag": "http-in", "listen": "127.0.0.1", "port": port, "protocol": "http",
            "settings": {}}


def http_freedom(port: int, access_path: str) -> dict[str, Any]:
    """HTTP proxy in, freedom out: the `http` suite's proxy."""
    return {"log": log_section(access_path), "inbounds": [http_inbound(port)],
            "outbounds": [freedom()]}


def freedom() -> dict[str, Any]:
    """The direct outbound."""
    return {"tag": "direct", "protocol": "freedom", "settings": {}}


def socks_freedom(port: int, access_path: str) -> dict[str, Any]:
    """SOCKS5 in, freedom out: the `socks` suite's proxy."""
    return {"log": log_section(access_path), "inbounds": [socks_inbound(port)],
            "outbounds": [freedom()]}


def vmess_client(socks_port: int, server_port: int, security: str, access_path: str,
                 stream: dict[str, Any] | None = None,
                 server_address: str = "127.0.0.1") -> dict[str, Any]:
    """SOCKS5 in, VMess (AEAD, alterId 0) out to ``server_address:server_port``."""
    out: dict[str, Any] = {
        "tag": "vmess-out", "protocol": "vmess",
        "settings": {"vnext": [{"address": server_address, "port": server_port,
                                "users": [{"id": UUID, "alterId": 0, "security": security}]}]},
    }
    if stream:
        out["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [socks_inbound(socks_port)],
            "outbounds": [out]}


def vmess_server(port: int, access_path: str,
                 stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """VMess in on 127.0.0.1:``port``, freedom out."""
    inbound: dict[str, Any] = {
        "tag": "vmess-in", "listen": "127.0.0.1", "port": port, "protocol": "vmess",
        "settings": {"clients": [{"id": UUID, "alterId": 0}]},
    }
    if stream:
        inbound["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [inbound], "outbounds": [freedom()]}


SS_PASSWORD = "vtwist-bench-password"


def shadowsocks_client(socks_port: int, server_port: int, method: str, access_path: str,
                       stream: dict[str, Any] | None = None,
                       server_address: str = "127.0.0.1") -> dict[str, Any]:
    """SOCKS5 in, Shadowsocks (``method``) out to ``server_address:server_port``."""
    out: dict[str, Any] = {
        "tag": "ss-out", "protocol": "shadowsocks",
        "settings": {"servers": [{"address": server_address, "port": server_port,
                                  "method": method, "password": SS_PASSWORD}]},
    }
    if stream:
        out["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [socks_inbound(socks_port)],
            "outbounds": [out]}


def shadowsocks_server(port: int, method: str, access_path: str,
                       stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """Shadowsocks (``method``) in on 127.0.0.1:``port``, freedom out."""
    inbound: dict[str, Any] = {
        "tag": "ss-in", "listen": "127.0.0.1", "port": port, "protocol": "shadowsocks",
        "settings": {"method": method, "password": SS_PASSWORD},
    }
    if stream:
        inbound["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [inbound], "outbounds": [freedom()]}


TROJAN_PASSWORD = "vtwist bench trojan"


def trojan_client(socks_port: int, server_port: int, access_path: str,
                  stream: dict[str, Any] | None = None,
                  server_address: str = "127.0.0.1") -> dict[str, Any]:
    """SOCKS5 in, Trojan out to ``server_address:server_port``."""
    outbound: dict[str, Any] = {
        "tag": "trojan-out", "protocol": "trojan",
        "settings": {"servers": [{"address": server_address, "port": server_port,
                                  "password": TROJAN_PASSWORD}]},
    }
    if stream:
        outbound["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [socks_inbound(socks_port)],
            "outbounds": [outbound]}


def trojan_server(port: int, access_path: str,
                  stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trojan in on 127.0.0.1:``port``, freedom out."""
    inbound: dict[str, Any] = {
        "tag": "trojan-in", "listen": "127.0.0.1", "port": port, "protocol": "trojan",
        "settings": {"clients": [{"password": TROJAN_PASSWORD}]},
    }
    if stream:
        inbound["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [inbound], "outbounds": [freedom()]}


def vless_client(socks_port: int, server_port: int, access_path: str,
                 stream: dict[str, Any] | None = None,
                 server_address: str = "127.0.0.1") -> dict[str, Any]:
    """SOCKS5 in, VLESS out to ``server_address:server_port``."""
    outbound: dict[str, Any] = {
        "tag": "vless-out", "protocol": "vless",
        "settings": {"vnext": [{"address": server_address, "port": server_port,
                                "users": [{"id": UUID, "encryption": "none"}]}]},
    }
    if stream:
        outbound["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [socks_inbound(socks_port)],
            "outbounds": [outbound]}


def vless_server(port: int, access_path: str,
                 stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """VLESS in on 127.0.0.1:``port``, freedom out."""
    inbound: dict[str, Any] = {
        "tag": "vless-in", "listen": "127.0.0.1", "port": port, "protocol": "vless",
        "settings": {"clients": [{"id": UUID}], "decryption": "none"},
    }
    if stream:
        inbound["streamSettings"] = stream
    return {"log": log_section(access_path), "inbounds": [inbound], "outbounds": [freedom()]}


def chain_server(protocol: str, port: int, security: str, access_path: str,
                 stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """The server config of a ``chain`` case: ``protocol`` in (``security`` is its cipher
    where the server has one), freedom out."""
    if protocol == "shadowsocks":
        return shadowsocks_server(port, security, access_path, stream)
    if protocol == "trojan":
        return trojan_server(port, access_path, stream)
    if protocol == "vless":
        return vless_server(port, access_path, stream)
    return vmess_server(port, access_path, stream)


def chain_client(protocol: str, socks_port: int, server_port: int, security: str,
                 access_path: str, stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """The client config of a ``chain`` case: SOCKS5 in, ``protocol`` out."""
    if protocol == "shadowsocks":
        return shadowsocks_client(socks_port, server_port, security, access_path, stream)
    if protocol == "trojan":
        return trojan_client(socks_port, server_port, access_path, stream)
    if protocol == "vless":
        return vless_client(socks_port, server_port, access_path, stream)
    return vmess_client(socks_port, server_port, security, access_path, stream)


def kcp_stream(header: str = "none", seed: str | None = None,
               **kcp: Any) -> dict[str, Any]:
    """``streamSettings`` for mKCP with ``kcpSettings`` overrides."""
    settings: dict[str, Any] = {"header": {"type": header}}
    settings.update(kcp)
    if seed is not None:
        settings["seed"] = seed
    return {"network": "kcp", "kcpSettings": settings}


def tls_stream(network: str, server: bool, cert_file: str, key_file: str,
               ws_path: str = "/vtb") -> dict[str, Any]:
    """``streamSettings`` for tcp+tls or ws+tls (clients skip verification: same cost)."""
    if server:
        tls: dict[str, Any] = {"certificates": [{"certificateFile": cert_file,
                                                 "keyFile": key_file}]}
    else:
        tls = {"serverName": "localhost", "allowInsecure": True}
    stream: dict[str, Any] = {"network": network, "security": "tls", "tlsSettings": tls}
    if network == "ws":
        stream["wsSettings"] = {"path": ws_path}
    return stream
