"""Compact matchers from one geo data entry (sans-IO): an :class:`IPSet` or a
:class:`DomainMatcher` built straight from the wire bytes of a GeoIP / GeoSite entry."""

from __future__ import annotations

import re

from vtwist.routing.geodata.wire import Entry, geoip_ranges, geosite_domains
from vtwist.routing.matcher import DomainMatcher, IPSet


def geoip_set(buf: object, entry: Entry) -> IPSet:
    """The IP ranges of one GeoIP entry as a merged, bisectable :class:`IPSet`."""
    v4, v6 = geoip_ranges(buf, entry)
    return IPSet.from_cidrs(v4, v6)


def geosite_matcher(buf: object, entry: Entry, attrs: tuple[str, ...] = (),
                    skipped: list[tuple[str, str]] | None = None) -> DomainMatcher:
    """The domains of one GeoSite entry (only those carrying every attribute in ``attrs``).

    A regexp entry Python cannot compile (RE2-only syntax) raises :class:`re.error`, or,
    with ``skipped``, is left out and listed there as (pattern, reason). Damaged data raises
    :class:`~vtwist.routing.geodata.wire.GeoDataError`.
    """
    matcher = DomainMatcher()
    full, suffixes, keywords = matcher.full, matcher.suffixes, matcher.keywords
    for kind, value in geosite_domains(buf, entry, attrs):
        if kind == "domain":
            suffixes.add(value.lower())
        elif kind == "full":
            full.add(value.lower())
        elif kind == "keyword":
            keywords.append(value.lower())
        elif skipped is None:
            matcher.add(kind, value)
        else:
            try:
                matcher.add(kind, value)
            except re.error as e:
                skipped.append((value, str(e)))
    matcher.freeze()
    return matcher
