"""V2Ray 4.34's protobuf handler configs (what HandlerService receives) as the V2Ray JSON
vtwist's config loader reads, so that an inbound, an outbound or a user added through the
API is validated exactly as one in a config file.

Covered: users of vmess, vless, trojan and shadowsocks; inbounds vmess, vless, trojan,
shadowsocks, socks, http and dokodemo-door; outbounds freedom, blackhole, vmess, vless,
trojan, shadowsocks and socks; over every transport and TLS :mod:`.stream_config` converts
(tcp, mkcp, websocket, http, quic, domainsocket, grpc). Other protocols are refused with
UNIMPLEMENTED.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from google.protobuf.message import DecodeError

from vtwist.app.api.errors import GrpcError, Status
from vtwist.app.api.stream_config import stream_json
from vtwist.app.api.v2raypb import (
    app_proxyman_config_pb2,
    common_protocol_user_pb2,
    proxy_blackhole_config_pb2,
    proxy_dokodemo_config_pb2,
    proxy_freedom_config_pb2,
    proxy_http_config_pb2,
    proxy_shadowsocks_config_pb2,
    proxy_socks_config_pb2,
    proxy_trojan_config_pb2,
    proxy_vless_account_pb2,
    proxy_vless_inbound_config_pb2,
    proxy_vmess_account_pb2,
    proxy_vmess_inbound_config_pb2,
    proxy_vmess_outbound_config_pb2,
)

try:  # generated only when V2Ray's tree has it
    from vtwist.app.api.v2raypb import proxy_vless_outbound_config_pb2
except ImportError:  # pragma: no cover
    proxy_vless_outbound_config_pb2 = None  # type: ignore[assignment]

_CIPHERS = {1: "aes-128-gcm", 2: "aes-256-gcm", 3: "chacha20-poly1305", 4: "none"}
_NETWORKS = {1: "tcp", 2: "tcp", 3: "udp"}
#: common.protocol.SecurityType -> a VMess user's JSON ``security`` (4.34: others are auto)
_VMESS_SECURITY = {3: "aes-128-gcm", 4: "chacha20-poly1305", 5: "none"}


def unpack(typed: Any, message_class: type, what: str) -> Any:
    """A TypedMessage's value as ``message_class`` (its type must be that message)."""
    name = message_class.DESCRIPTOR.full_name  # type: ignore[attr-defined]
    if typed.type != name:
        raise GrpcError(Status.INVALID_ARGUMENT, f"{what}: expected {name}, got "
                        f"{typed.type or 'nothing'!r}")
    message = message_class()
    try:
        message.ParseFromString(typed.value)
    except DecodeError as e:
        raise GrpcError(Status.INVALID_ARGUMENT, f"{what}: {name} does not decode: {e}") \
            from None
    return message


def address(value: Any) -> str:
    """An IPOrDomain as text ("" when empty)."""
    kind = value.WhichOneof("address")
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(bytes(value.ip)))
        except ValueError:
            raise GrpcError(Status.INVALID_ARGUMENT,
                            f"an IP address of {len(value.ip)} bytes") from None
    return value.domain if kind == "domain" else ""


#: account message full name -> (protocol, account -> JSON fields)
ACCOUNTS: dict[str, tuple[str, Any, Any]] = {
    "v2ray.core.proxy.vmess.Account": (
        "vmess", proxy_vmess_account_pb2.Account,
        lambda a: {"id": a.id, "alterId": a.alter_id,
                   "security": _VMESS_SECURITY.get(a.security_settings.type, "auto")}),
    "v2ray.core.proxy.vless.Account": (
        "vless", proxy_vless_account_pb2.Account,
        lambda a: {"id": a.id, **({"flow": a.flow} if a.flow else {})}),
    "v2ray.core.proxy.trojan.Account": (
        "trojan", proxy_trojan_config_pb2.Account, lambda a: {"password": a.password}),
    "v2ray.core.proxy.shadowsocks.Account": (
        "shadowsocks", proxy_shadowsocks_config_pb2.Account,
        lambda a: {"password": a.password,
                   "method": _CIPHERS.get(a.cipher_type, f"cipher {a.cipher_type}")}),
}


def user_json(user: Any) -> tuple[str, dict[str, Any]]:
    """(protocol, JSON client entry) of a ``v2ray.core.common.protocol.User``."""
    entry = ACCOUNTS.get(user.account.type)
    if entry is None:
        raise GrpcError(Status.INVALID_ARGUMENT,
                        f"unknown account type {user.account.type or 'nothing'!r}")
    protocol, message_class, fields = entry
    account = unpack(user.account, message_class, "user.account")
    data = fields(account)
    if user.level:
        data["level"] = user.level
    if user.email:
        data["email"] = user.email
    return protocol, data


def users_json(users: Any, protocol: str) -> list[dict[str, Any]]:
    """JSON client entries of users that must be ``protocol``'s."""
    out = []
    for user in users:
        kind, data = user_json(user)
        if kind != protocol:
            raise GrpcError(Status.INVALID_ARGUMENT, f"a {kind} account in a {protocol} "
                            "handler")
        out.append(data)
    return out


def _fallbacks(items: Any) -> list[dict[str, Any]]:
    out = []
    for f in items:
        entry: dict[str, Any] = {"dest": f.dest}
        for key in ("alpn", "path", "type"):
            if getattr(f, key):
                entry[key] = getattr(f, key)
        if f.xver:
            entry["xver"] = f.xver
        out.append(entry)
    return out


def _servers(endpoints: Any, protocol: str) -> list[dict[str, Any]]:
    return [{"address": address(e.address), "port": e.port,
             "users": users_json(e.user, protocol)} for e in endpoints]


def inbound_proxy_json(typed: Any) -> tuple[str, dict[str, Any]]:
    """(protocol, JSON settings) of an inbound's ``proxy_settings``."""
    kind = typed.type
    if kind == "v2ray.core.proxy.vmess.inbound.Config":
        c = unpack(typed, proxy_vmess_inbound_config_pb2.Config, "proxy_settings")
        settings: dict[str, Any] = {"clients": users_json(c.user, "vmess")}
        if c.HasField("default"):
            settings["default"] = {"alterId": c.default.alter_id, "level": c.default.level}
        if c.detour.to:
            settings["detour"] = {"to": c.detour.to}
        if c.secure_encryption_only:
            settings["disableInsecureEncryption"] = True
        return "vmess", settings
    if kind == "v2ray.core.proxy.vless.inbound.Config":
        c = unpack(typed, proxy_vless_inbound_config_pb2.Config, "proxy_settings")
        return "vless", {"clients": users_json(c.clients, "vless"),
                         "decryption": c.decryption or "none",
                         **({"fallbacks": _fallbacks(c.fallbacks)} if c.fallbacks else {})}
    if kind == "v2ray.core.proxy.trojan.ServerConfig":
        c = unpack(typed, proxy_trojan_config_pb2.ServerConfig, "proxy_settings")
        return "trojan", {"clients": users_json(c.users, "trojan"),
                          **({"fallbacks": _fallbacks(c.fallbacks)} if c.fallbacks else {})}
    if kind == "v2ray.core.proxy.shadowsocks.ServerConfig":
        c = unpack(typed, proxy_shadowsocks_config_pb2.ServerConfig, "proxy_settings")
        [user] = users_json([c.user], "shadowsocks") if c.HasField("user") else [{}]
        networks = sorted({_NETWORKS[n] for n in c.network if n in _NETWORKS})
        if c.udp_enabled and "udp" not in networks:
            networks.append("udp")
        return "shadowsocks", {**user, "network": ",".join(networks or ["tcp"])}
    if kind == "v2ray.core.proxy.socks.ServerConfig":
        c = unpack(typed, proxy_socks_config_pb2.ServerConfig, "proxy_settings")
        settings = {"auth": "password" if c.auth_type == 1 else "noauth",
                    "udp": c.udp_enabled}
        if c.accounts:
            settings["accounts"] = [{"user": u, "pass": p} for u, p in c.accounts.items()]
        if c.HasField("address"):
            settings["ip"] = address(c.address)
        if c.user_level:
            settings["userLevel"] = c.user_level
        return "socks", settings
    if kind == "v2ray.core.proxy.http.ServerConfig":
        c = unpack(typed, proxy_http_config_pb2.ServerConfig, "proxy_settings")
        settings = {"allowTransparent": c.allow_transparent}
        if c.accounts:
            settings["accounts"] = [{"user": u, "pass": p} for u, p in c.accounts.items()]
        if c.user_level:
            settings["userLevel"] = c.user_level
        return "http", settings
    if kind == "v2ray.core.proxy.dokodemo.Config":
        c = unpack(typed, proxy_dokodemo_config_pb2.Config, "proxy_settings")
        networks = sorted({_NETWORKS[n] for n in c.networks if n in _NETWORKS})
        settings = {"address": address(c.address), "port": c.port,
                    "network": ",".join(networks or ["tcp"]),
                    "followRedirect": c.follow_redirect}
        if c.user_level:
            settings["userLevel"] = c.user_level
        return "dokodemo-door", settings
    raise GrpcError(Status.UNIMPLEMENTED, f"vtwist cannot add an inbound of type {kind!r}")


def inbound_json(config: Any) -> dict[str, Any]:
    """A ``core.InboundHandlerConfig`` as a V2Ray JSON ``inbounds[]`` entry."""
    receiver = unpack(config.receiver_settings, app_proxyman_config_pb2.ReceiverConfig,
                      "receiver_settings")
    protocol, settings = inbound_proxy_json(config.proxy_settings)
    low, high = receiver.port_range.From, receiver.port_range.To or receiver.port_range.From
    data: dict[str, Any] = {"tag": config.tag, "protocol": protocol,
                            "port": str(low) if low == high else f"{low}-{high}",
                            "settings": settings}
    listen = address(receiver.listen) if receiver.HasField("listen") else ""
    if listen:
        data["listen"] = listen
    if receiver.HasField("stream_settings"):
        data["streamSettings"] = stream_json(receiver.stream_settings,
                                             "receiver_settings.stream_settings")
    sniffing = receiver.sniffing_settings
    if sniffing.enabled:
        data["sniffing"] = {"enabled": True,
                            "destOverride": list(sniffing.destination_override)}
    return data


def outbound_json(config: Any) -> dict[str, Any]:
    """A ``core.OutboundHandlerConfig`` as a V2Ray JSON ``outbounds[]`` entry."""
    data: dict[str, Any] = {"tag": config.tag}
    if config.HasField("sender_settings"):
        sender = unpack(config.sender_settings, app_proxyman_config_pb2.SenderConfig,
                        "sender_settings")
        if sender.HasField("stream_settings"):
            data["streamSettings"] = stream_json(sender.stream_settings,
                                                 "sender_settings.stream_settings")
        if sender.proxy_settings.tag:
            data["proxySettings"] = {"tag": sender.proxy_settings.tag}
        if sender.multiplex_settings.enabled:
            data["mux"] = {"enabled": True,
                           "concurrency": sender.multiplex_settings.concurrency}
    typed = config.proxy_settings
    kind = typed.type
    if kind == "v2ray.core.proxy.freedom.Config":
        c = unpack(typed, proxy_freedom_config_pb2.Config, "proxy_settings")
        strategy = {0: "AsIs", 1: "UseIP", 2: "UseIPv4", 3: "UseIPv6"}[c.domain_strategy]
        data.update(protocol="freedom", settings={"domainStrategy": strategy})
        if c.destination_override.HasField("server"):
            server = c.destination_override.server
            data["settings"]["redirect"] = f"{address(server.address)}:{server.port}"
    elif kind == "v2ray.core.proxy.blackhole.Config":
        c = unpack(typed, proxy_blackhole_config_pb2.Config, "proxy_settings")
        response = "http" if c.response.type.endswith("HTTPResponse") else "none"
        data.update(protocol="blackhole", settings={"response": {"type": response}})
    elif kind == "v2ray.core.proxy.vmess.outbound.Config":
        c = unpack(typed, proxy_vmess_outbound_config_pb2.Config, "proxy_settings")
        data.update(protocol="vmess", settings={"vnext": _servers(c.Receiver, "vmess")})
    elif kind == "v2ray.core.proxy.vless.outbound.Config" and proxy_vless_outbound_config_pb2:
        c = unpack(typed, proxy_vless_outbound_config_pb2.Config, "proxy_settings")
        vnext = _servers(c.vnext, "vless")
        for server in vnext:
            for user in server["users"]:
                user.setdefault("encryption", "none")
        data.update(protocol="vless", settings={"vnext": vnext})
    elif kind == "v2ray.core.proxy.trojan.ClientConfig":
        c = unpack(typed, proxy_trojan_config_pb2.ClientConfig, "proxy_settings")
        servers = [{"address": s["address"], "port": s["port"], **u}
                   for s in _servers(c.server, "trojan") for u in s["users"][:1]]
        data.update(protocol="trojan", settings={"servers": servers})
    elif kind == "v2ray.core.proxy.shadowsocks.ClientConfig":
        c = unpack(typed, proxy_shadowsocks_config_pb2.ClientConfig, "proxy_settings")
        servers = [{"address": s["address"], "port": s["port"], **u}
                   for s in _servers(c.server, "shadowsocks") for u in s["users"][:1]]
        data.update(protocol="shadowsocks", settings={"servers": servers})
    elif kind == "v2ray.core.proxy.socks.ClientConfig":
        c = unpack(typed, proxy_socks_config_pb2.ClientConfig, "proxy_settings")
        servers = []
        for e in c.server:
            users = []
            for u in e.user:
                account = unpack(u.account, proxy_socks_config_pb2.Account, "user.account")
                users.append({"user": account.username, "pass": account.password})
            servers.append({"address": address(e.address), "port": e.port,
                            **({"users": users} if users else {})})
        data.update(protocol="socks", settings={"servers": servers})
    else:
        raise GrpcError(Status.UNIMPLEMENTED,
                        f"vtwist cannot add an outbound of type {kind!r}")
    return data


def decode_user(data: bytes) -> Any:
    """A ``v2ray.core.common.protocol.User`` from bytes."""
    user = common_protocol_user_pb2.User()
    try:
        user.ParseFromString(data)
    except DecodeError as e:
        raise GrpcError(Status.INVALID_ARGUMENT, f"user does not decode: {e}") from None
    return user
