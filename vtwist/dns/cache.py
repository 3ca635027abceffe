"""The answer cache and the static hosts of the ``dns`` section (sans-IO: time is a
parameter)."""

from __future__ import annotations

from collections import OrderedDict

from vtwist.dns.settings import HostRule

#: ``family`` values (as :mod:`vtwist.dns.system`).
ANY, V4, V6 = 0, 4, 6


class TTLCache:
    """Answers by (name, family) until their TTL runs out; at most ``size`` entries (the
    oldest leave first)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, int], tuple[float, tuple[str, ...]]] = OrderedDict()

    def get(self, name: str, family: int, now: float) -> tuple[str, ...] | None:
        """The cached addresses, or None when absent or expired."""
        key = (name, family)
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, name: str, family: int, ips: tuple[str, ...], ttl: float, now: float) -> None:
        """Remember ``ips`` for ``ttl`` seconds."""
        if ttl <= 0:
            return
        key = (name, family)
        self._entries.pop(key, None)
        self._entries[key] = (now + ttl, ips)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _family_of(ip: str) -> int:
    return V6 if ":" in ip else V4


class StaticHosts:
    """``dns.hosts``: every matching rule's IPs (rules in key order, as 4.34), or an alias
    (followed up to 5 times)."""

    def __init__(self, rules: list[HostRule]) -> None:
        self.rules = rules

    def _match(self, name: str) -> tuple[list[str], str]:
        ips: list[str] = []
        alias = ""
        for rule in self.rules:
            if rule.matcher.match(name):
                if rule.alias:
                    alias = alias or rule.alias
                else:
                    ips.extend(rule.ips)
        return ips, alias

    def lookup(self, name: str, family: int = ANY, depth: int = 5) -> tuple[str, ...] | str | None:
        """The addresses (possibly none of ``family``: an empty tuple), the domain to look
        up instead (a ``str``), or None when no rule names ``name``."""
        ips, alias = self._match(name)
        if not ips and alias:
            if depth > 0:
                found = self.lookup(alias, family, depth - 1)
                if found is not None:
                    return found
            return alias
        if not ips:
            return None
        return tuple(ip for ip in dict.fromkeys(ips) if family in (ANY, _family_of(ip)))
