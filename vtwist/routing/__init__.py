"""V2Ray routing: :mod:`.matcher` (sans-IO rule matching) and :mod:`.parse` (JSON -> Router).

Only the matcher is re-exported here; import parsing from :mod:`vtwist.routing.parse`, so that
matching code never pulls in the config layer.
"""

from vtwist.routing.matcher import (
    AS_IS,
    IP_IF_NON_MATCH,
    IP_ON_DEMAND,
    PRIVATE,
    PRIVATE_NETWORKS,
    DomainMatcher,
    IPAddress,
    IPNetwork,
    IPSet,
    NeedIPs,
    Route,
    RouteContext,
    Router,
    Rule,
    ip_of,
    split_source,
)

__all__ = [
    "AS_IS",
    "IP_IF_NON_MATCH",
    "IP_ON_DEMAND",
    "PRIVATE",
    "PRIVATE_NETWORKS",
    "DomainMatcher",
    "IPAddress",
    "IPNetwork",
    "IPSet",
    "NeedIPs",
    "Route",
    "RouteContext",
    "Router",
    "Rule",
    "ip_of",
    "split_source",
]
