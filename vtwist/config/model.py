"""Typed configuration objects built from V2Ray JSON by :mod:`vtwist.config.loader`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vtwist.policy import DEFAULT_POLICY, Policy

if TYPE_CHECKING:
    from vtwist.routing.matcher import Router


@dataclass
class LogConfig:
    """``log``: level, optional access / error log files and (vtwist's own) ``format``:
    ``text`` (V2Ray-like lines) or ``json`` (one object per line)."""

    loglevel: str = "warning"
    access: str | None = None
    error: str | None = None
    format: str = "text"


@dataclass
class SniffingSettings:
    """An inbound's ``sniffing`` (or its old form ``domainOverride``): when ``enabled``,
    route by the domain sniffed from the first bytes for the protocols in
    ``dest_override`` (``"http"``, ``"tls"``; 4.34's https/ssl are read as ``"tls"``)."""

    enabled: bool = False
    dest_override: list[str] = field(default_factory=list)


@dataclass
class AllocateSettings:
    """An inbound's ``allocate``: ``"always"`` listens on every port of the range;
    ``"random"`` keeps ``concurrency`` random ports of it open, picked anew every
    ``refresh`` minutes (V2Ray 4.34's defaults: 3 ports, 5 minutes)."""

    strategy: str = "always"
    refresh: int = 5
    concurrency: int = 3


@dataclass
class MuxSettings:
    """An outbound's ``mux`` when enabled: ``concurrency`` live sessions per connection
    (1…1024; 0 or absent in JSON means 8). vmess uses it; other outbounds ignore it."""

    concurrency: int = 8


@dataclass
class InboundConfig:
    """One ``inbounds[]`` entry. ``settings`` is the protocol module's own type."""

    protocol: str
    ports: list[int]
    listen: str = "0.0.0.0"
    tag: str = ""
    settings: Any = None
    #: A vtwist.transport.settings.StreamSettings, filled by the loader; None means the
    #: default (plain tcp). Typed Any: the config layer does not import the transport layer.
    stream: Any = None
    sniffing: SniffingSettings = field(default_factory=SniffingSettings)
    allocate: AllocateSettings = field(default_factory=AllocateSettings)


@dataclass
class OutboundConfig:
    """One ``outbounds[]`` entry. ``settings`` is the protocol module's own type."""

    protocol: str
    tag: str = ""
    settings: Any = None
    #: A vtwist.transport.settings.StreamSettings, filled by the loader; None means the
    #: default (plain tcp). Typed Any: the config layer does not import the transport layer.
    stream: Any = None
    #: ``proxySettings.tag``: dial the server through the outbound with this tag ("" = direct)
    proxy_tag: str = ""
    #: ``mux``: Mux.Cool settings; None when mux is off (absent, disabled, concurrency < 0)
    mux: MuxSettings | None = None


@dataclass
class ApiConfig:
    """``api``: the tag routing sends to V2Ray's gRPC API and the services it serves (full
    gRPC names, e.g. ``v2ray.core.app.stats.command.StatsService``)."""

    tag: str
    services: list[str] = field(default_factory=list)


@dataclass
class MetricsConfig:
    """``metrics`` (vtwist's own): serve Prometheus ``/metrics`` on ``listen``:``port``."""

    port: int
    listen: str = "127.0.0.1"


@dataclass
class Config:
    """A whole validated configuration."""

    log: LogConfig = field(default_factory=LogConfig)
    inbounds: list[InboundConfig] = field(default_factory=list)
    outbounds: list[OutboundConfig] = field(default_factory=list)
    policy: Policy = DEFAULT_POLICY
    #: The rules (a vtwist.routing.Router) the loader parsed; None routes everything to the
    #: first outbound.
    routing: Router | None = None
    #: The ``dns`` section (a vtwist.dns.settings.DnsConfig); None: the system resolver.
    dns: Any = None
    #: ``"stats": {}`` is present: keep V2Ray's traffic counters
    stats: bool = False
    api: ApiConfig | None = None
    metrics: MetricsConfig | None = None
    #: ``reverse``: bridges and portals (a vtwist.config.reverse.ReverseConfig)
    reverse: Any = None
    warnings: list[str] = field(default_factory=list)

    def api_inbound_tags(self) -> set[str]:
        """The inbound tags routing sends to the API (``inboundTag`` rules whose
        ``outboundTag`` is ``api.tag``): those inbounds serve the API's gRPC."""
        if self.api is None or self.routing is None:
            return set()
        tags: set[str] = set()
        for rule in self.routing.rules:
            if rule.outbound_tag == self.api.tag and rule.inbound_tags:
                tags |= rule.inbound_tags
        return tags


@dataclass
class BuildContext:
    """What protocol builders get: the reactor, the dispatcher and the policy."""

    reactor: Any
    dispatcher: Any
    policy: Policy = DEFAULT_POLICY
