"""V2Ray 3.x config keys that 4.34 still reads: top-level ``port``, ``inbound``,
``outbound``, ``inboundDetour``, ``outboundDetour``, and an inbound's ``domainOverride``.

4.34's ``Config.Build`` lists inbounds as ``inbound``, then ``inboundDetour[]``, then
``inbounds[]`` (outbounds the same way), and gives the top-level ``port`` to the first of
them when it has no ``port`` of its own. Each legacy key still works here, with a warning
that shows its modern form.
"""

from __future__ import annotations

from vtwist.config.node import Node

#: legacy key -> (modern key, where the entries go)
_SECTIONS = {
    "inbound": ("inbounds", "first"),
    "inboundDetour": ("inbounds", "after \"inbound\", before \"inbounds\""),
    "outbound": ("outbounds", "first"),
    "outboundDetour": ("outbounds", "after \"outbound\", before \"outbounds\""),
}


def _deprecated(root: Node, key: str) -> None:
    modern, where = _SECTIONS[key]
    item = "{ ... }" if key in ("inbound", "outbound") else "{ ... }, ..."
    root.get(key).warn(f"deprecated, use \"{modern}\": [ {item} ] (its entries go {where})")


def _section(root: Node, single: str, detours: str, modern: str) -> list[Node]:
    nodes: list[Node] = []
    if root.has(single) and root.value.get(single) is not None:
        _deprecated(root, single)
        nodes.append(root.get(single))
    if root.has(detours) and root.value.get(detours) is not None:
        _deprecated(root, detours)
        nodes.extend(root.get(detours).items())
    nodes.extend(root.get(modern, []).items())
    return nodes


def legacy_sections(root: Node) -> tuple[list[Node], list[Node]]:
    """(inbound nodes, outbound nodes) in the order V2Ray 4.34 builds them, legacy keys
    included (each with a deprecation warning), the top-level ``port`` applied."""
    inbounds = _section(root, "inbound", "inboundDetour", "inbounds")
    outbounds = _section(root, "outbound", "outboundDetour", "outbounds")
    if root.has("port"):
        port = root.int("port", 0, 0, 65535)
        root.get("port").warn(
            "deprecated, set \"port\" in the inbound: \"inbounds\": [ { \"port\": "
            f"{port}, ... }} ]")
        first = inbounds[0] if inbounds else None
        if port > 0 and first is not None and isinstance(first.value, dict) \
                and first.value.get("port") is None:
            inbounds[0] = Node(dict(first.value, port=port), first.path, first.warn_sink)
    return inbounds, outbounds


def domain_override(node: Node) -> list[str]:
    """An inbound's ``domainOverride`` (4.34's ``toProtocolList``): ``http``, and ``tls``
    for tls/https/ssl; anything else is an error. Warns with the modern ``sniffing`` form."""
    protocols: list[str] = []
    item = node.get("domainOverride")
    values = item.value.split(",") if isinstance(item.value, str) else \
        [i.as_str() for i in item.items()]
    for value in values:
        name = value.lower()
        if name == "http":
            protocols.append("http")
        elif name in ("https", "tls", "ssl"):
            protocols.append("tls")
        else:
            raise item.error(f"expected http or tls (https, ssl), got {value!r}")
    shown = ", ".join(f"\"{p}\"" for p in protocols)
    item.warn(f"deprecated, use \"sniffing\": {{ \"enabled\": true, \"destOverride\": "
              f"[ {shown} ] }}")
    return protocols
