"""Typed configuration objects built from V2Ray JSON by :mod:`vtwist.config.loader`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vtwist.policy import DEFAULT_POLICY, Policy

if TYPE_CHECKING:
    from vtwist.routing.matcher import Router


@dataclass
class LogConfig:
    """``log``: level and optional access / error log files."""

    loglevel: str = "warning"
    access: str | None = None
    error: str | None = None


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


@dataclass
class OutboundConfig:
    """One ``outbounds[]`` entry. ``settings`` is the protocol module's own type."""

    protocol: str
    tag: str = ""
    settings: Any = None
    #: A vtwist.transport.settings.StreamSettings, filled by the loader; None means the
    #: default (plain tcp). Typed Any: the config layer does not import the transport layer.
    stream: Any = None


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
    warnings: list[str] = field(default_factory=list)


@dataclass
class BuildContext:
    """What protocol builders get: the reactor, the dispatcher and the policy."""

    reactor: Any
    dispatcher: Any
    policy: Policy = DEFAULT_POLICY
