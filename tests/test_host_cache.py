"""parse_ip/normalize_host answer the same from their cache as without it."""

from __future__ import annotations

import ipaddress

from twisted.trial.unittest import SynchronousTestCase

from vtwist.address import normalize_host, parse_ip


class HostCacheTests(SynchronousTestCase):
    def test_cached_answers_match(self) -> None:
        """Repeated and bracketed hosts, domains, mapped IPv4, a str subclass (not cached)."""
        for host in ("127.0.0.1", "127.0.0.1", "[::1]", "::FFFF:1.2.3.4", "example.com",
                     "Example.COM", "[bad", "1.2.3"):
            for _ in range(2):
                self.assertEqual(parse_ip(host), _uncached_parse(host), host)
        self.assertEqual(normalize_host("::ffff:1.2.3.4"), "1.2.3.4")
        self.assertEqual(normalize_host("[2001:DB8::1]"), "2001:db8::1")
        self.assertEqual(normalize_host("Example.COM"), "Example.COM")
        self.assertEqual(parse_ip(_Host("10.0.0.1")), ipaddress.ip_address("10.0.0.1"))


class _Host(str):
    """A str subclass: parsed every time (only exact str is cached)."""


def _uncached_parse(host: str) -> object:
    h = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(h)
    except ValueError:
        return None
