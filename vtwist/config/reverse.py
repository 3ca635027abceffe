"""The ``reverse`` section (V2Ray 4.34 infra/conf/reverse.go), Twisted-free::

    "reverse": {"bridges": [{"tag": "bridge", "domain": "private.example"}],
                "portals": [{"tag": "portal", "domain": "private.example"}]}

A bridge's tag is the inbound tag its traffic is routed with; a portal's tag is an outbound
tag (routing sends both the bridge's connections and the public traffic to it). As 4.34,
an empty tag or domain is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vtwist.config.node import Node

__all__ = ["ReverseConfig", "ReverseLink", "parse_reverse"]


@dataclass(frozen=True)
class ReverseLink:
    """One bridge or portal: its tag and the domain that marks its connections."""

    tag: str
    domain: str


@dataclass
class ReverseConfig:
    """The bridges and portals of a config."""

    bridges: list[ReverseLink] = field(default_factory=list)
    portals: list[ReverseLink] = field(default_factory=list)


def _links(node: Node, what: str) -> list[ReverseLink]:
    out = []
    for item in node.items():
        item.require_object()
        tag = item.str("tag", "")
        domain = item.str("domain", "")
        if not tag:
            raise item.error(f"{what} tag is empty", "tag")
        if not domain:
            raise item.error(f"{what} domain is empty", "domain")
        item.warn_unknown()
        out.append(ReverseLink(tag, domain.lower()))
    return out


def parse_reverse(node: Node) -> ReverseConfig:
    """The ``reverse`` object."""
    node.require_object()
    config = ReverseConfig(_links(node.get("bridges", []), "bridge"),
                           _links(node.get("portals", []), "portal"))
    node.warn_unknown()
    return config
