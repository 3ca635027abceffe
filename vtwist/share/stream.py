"""A link's transport: network, its ``type``/``host``/``path`` fields, and TLS.

:class:`Stream` is what every scheme that carries a transport shares (``vmess://`` in its
two forms, ``vless://``, ``trojan://``): its canonical form, V2Ray 4.34's
``streamSettings`` for it and back, and the query-string form (``type``, ``security``,
``headerType``, ``host``, ``path`` or ``seed``, ``sni``, ``alpn``, ``allowInsecure``).
What the three loose fields mean per network comes from the network registry's link fields
(:mod:`vtwist.transport.linkfields`); nothing here branches on a network's name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from vtwist.share import fields
from vtwist.share.errors import LinkError, UnsupportedTransportError, Warn, relabel
from vtwist.share.fields import join_list, split_list
from vtwist.transport import registry
from vtwist.transport.linkfields import LinkFields

#: Query keys (besides the network's own) that a query-string link may carry for TLS.
INSECURE_KEYS = ("allowInsecure", "allowinsecure", "insecure", "skip-cert-verify")


def link_fields(net: str, key: str = "net") -> LinkFields:
    """The link fields of a network links can use, else UnsupportedTransportError."""
    found = fields.network_fields(net)
    if found is None:
        raise UnsupportedTransportError(net, key)
    return found


def relabel_warn(warn: Warn, scheme: str) -> Warn:
    """``warn`` with the link-field readers' "a vmess link" said as "a ``scheme`` link"."""
    if scheme == "vmess":
        return warn
    return lambda message: warn(message.replace("a vmess link", f"a {scheme} link"))


@dataclass(frozen=True)
class Stream:
    """A link's transport fields. ``net``/``type`` are canonical lower-case names; ``tls``
    is ``"tls"`` or ``""``."""

    net: str = "tcp"
    type: str = "none"
    host: str = ""
    path: str = ""
    tls: str = ""
    sni: str = ""
    alpn: str = ""
    allow_insecure: bool = False
    fp: str = ""

    def canonical(self, net_key: str = "net") -> Stream:
        """The same transport with fields that mean nothing for it cleared (``fp`` too:
        V2Ray 4.34 has no fingerprint). Raises UnsupportedTransportError (``net_key``)."""
        fields_ = link_fields(self.net, net_key)
        header, host, path = fields_.canonical(self.type, self.host, self.path)
        sni, alpn, insecure = self.sni, self.alpn, self.allow_insecure
        if self.tls:
            if not sni and host:
                sni = fields_.sni(host)
            alpn = join_list(split_list(alpn))
        else:
            sni, alpn, insecure = "", "", False
        return replace(self, type=header, host=host, path=path, sni=sni, alpn=alpn,
                       allow_insecure=insecure, fp="")

    def ignored(self, net_key: str = "net") -> list[str]:
        """Notes on fields set here that the outbound cannot use (for warnings)."""
        canonical = self.canonical(net_key)
        notes = []
        if self.fp:
            notes.append(f"fp {self.fp!r}: V2Ray 4.34 has no TLS fingerprint setting; ignored")
        for name in ("host", "path", "sni", "alpn"):
            if getattr(self, name) and not getattr(canonical, name):
                notes.append(f"{name} {getattr(self, name)!r} means nothing for "
                             f"{self.net}{'+tls' if self.tls else ''}; ignored")
        if self.type != canonical.type:
            notes.append(f"type {self.type!r} means nothing for {self.net}; ignored")
        if self.allow_insecure and not canonical.allow_insecure:
            notes.append("allowInsecure without tls; ignored")
        return notes

    # -- streamSettings ------------------------------------------------------------------
    def to_settings(self, net_key: str = "net") -> dict[str, Any]:
        """V2Ray 4.34's ``streamSettings`` for this transport."""
        stream = self.canonical(net_key)
        settings: dict[str, Any] = {"network": stream.net,
                                    "security": "tls" if stream.tls else "none"}
        network = registry.lookup(stream.net)
        value = link_fields(stream.net, net_key).to_settings(stream.type, stream.host,
                                                              stream.path)
        if value is not None and network is not None and network.settings_key:
            settings[network.settings_key] = value
        if stream.tls:
            tls: dict[str, Any] = {}
            if stream.sni:
                tls["serverName"] = stream.sni
            if stream.alpn:
                tls["alpn"] = split_list(stream.alpn)
            if stream.allow_insecure:
                tls["allowInsecure"] = True
            settings["tlsSettings"] = tls
        return settings

    @classmethod
    def from_settings(cls, value: Any, warn: Warn, scheme: str = "vmess") -> Stream:
        """The canonical transport of an outbound's ``streamSettings`` (absent: plain tcp).

        Settings a link cannot carry are dropped with a warning naming ``scheme``.
        """
        obj, text = fields.obj, fields.text
        warn = relabel_warn(warn, scheme)
        stream = obj(value, "streamSettings")
        net = fields.network(text(stream, "network"), "streamSettings.network")
        fields_ = fields.network_fields(net)
        network = registry.lookup(net)
        if fields_ is None or network is None or not network.settings_key:
            raise UnsupportedTransportError(net, "streamSettings.network")
        tls = fields.tls(text(stream, "security"), "streamSettings.security")
        key = network.settings_key
        header, host, path = fields_.from_settings(stream.get(key), f"streamSettings.{key}",
                                                   warn)
        sni, alpn, insecure = "", "", False
        if tls:
            tls_settings = obj(stream.get("tlsSettings"), "streamSettings.tlsSettings")
            sni = text(tls_settings, "serverName")
            alpn = join_list(fields.string_list(tls_settings.get("alpn"),
                                                "streamSettings.tlsSettings.alpn"))
            insecure = fields.boolean(tls_settings.get("allowInsecure"),
                                      "streamSettings.tlsSettings.allowInsecure")
            fields.drop_extra(tls_settings, ("serverName", "alpn", "allowInsecure"),
                              "streamSettings.tlsSettings", warn)
        return cls(net=net, type=header, host=host, path=path, tls=tls, sni=sni, alpn=alpn,
                   allow_insecure=insecure).canonical("streamSettings.network")

    # -- the query-string form -------------------------------------------------------------
    def to_query(self, net_key: str = "type") -> dict[str, str]:
        """``type``, ``security``, the network's own keys, then the TLS keys (canonical)."""
        stream = self.canonical(net_key)
        query: dict[str, str] = {"type": stream.net,
                                 "security": "tls" if stream.tls else "none"}
        query.update(link_fields(stream.net, net_key).to_query(stream.type, stream.host,
                                                               stream.path))
        if stream.tls:
            if stream.sni:
                query["sni"] = stream.sni
            if stream.alpn:
                query["alpn"] = stream.alpn
            if stream.allow_insecure:
                query["allowInsecure"] = "1"
        return query

    @classmethod
    def from_query(cls, query: dict[str, str], default_tls: str = "",
                   sni_keys: tuple[str, ...] = ("sni",)) -> Stream:
        """The transport a query-string link describes (validated, not yet canonical).

        ``default_tls`` is the scheme's ``security`` when the link gives none (trojan: tls);
        ``sni_keys`` the keys that may carry the server name, first found wins.
        """
        net = fields.network(query.get("type", "").strip(), "type")
        fields_ = fields.network_fields(net)
        header, host, path = (fields_.fields_from_query(query) if fields_ is not None else
                              (query.get("headerType", ""), query.get("host", ""),
                               query.get("path", "")))
        insecure_key = next((k for k in INSECURE_KEYS if k in query), None)
        return cls(
            net=net,
            type=fields.header(net, header.strip(), "headerType"),
            host=host,
            path=path,
            tls=fields.tls((query.get("security", "").strip() or default_tls), "security"),
            sni=next((query[k] for k in sni_keys if query.get(k)), ""),
            alpn=query.get("alpn", ""),
            allow_insecure=fields.boolean(query[insecure_key], insecure_key)
            if insecure_key else False,
            fp=query.get("fp", ""),
        )

    def to_json(self) -> dict[str, Any]:
        """The fields as a JSON object (for ``link decode --fields``)."""
        data: dict[str, Any] = {"net": self.net, "type": self.type, "host": self.host,
                                "path": self.path, "tls": self.tls, "sni": self.sni,
                                "alpn": self.alpn, "fp": self.fp}
        if self.allow_insecure:
            data["allowInsecure"] = True
        return data


class StreamLink:
    """What the query-string links with a transport share (``vless://``, ``trojan://``): the
    name, the canonical form, the notes and V2Ray's outbound. A subclass is a frozen dataclass
    with ``address``, ``port``, ``remark`` and ``stream`` fields, and says its ``protocol``,
    its error label ``what`` and :meth:`server_settings`."""

    protocol: str
    what: str
    address: str
    port: int
    remark: str
    stream: Stream

    @property
    def name(self) -> str:
        """``remark``, or ``address:port`` when the link has none."""
        return self.remark or f"{self.address}:{self.port}"

    def canonical(self) -> Any:
        """The link with transport fields that mean nothing cleared (raises
        UnsupportedTransportError for a network a link cannot name)."""
        try:
            return replace(self, stream=self.stream.canonical("type"))  # type: ignore[type-var]
        except LinkError as e:
            raise relabel(e, self.what) from None

    def ignored(self) -> list[str]:
        """Notes on fields the outbound cannot use."""
        return self.stream.ignored("type")

    def server_settings(self) -> dict[str, Any]:
        """The outbound's ``settings`` for this (canonical) link."""
        raise NotImplementedError

    def to_outbound(self, tag: str | None = None) -> dict[str, Any]:
        """V2Ray 4.34's outbound (``tag`` defaults to the name; omitted if empty)."""
        link = self.canonical()
        outbound: dict[str, Any] = {"protocol": self.protocol}
        tag = link.remark if tag is None else tag
        if tag:
            outbound["tag"] = tag
        outbound["settings"] = link.server_settings()
        outbound["streamSettings"] = link.stream.to_settings("type")
        return outbound
