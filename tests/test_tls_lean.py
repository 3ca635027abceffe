"""The TLS protocol's lean ``makeConnection`` (one ``directlyProvides`` call) declares what
Twisted's own declares, and parse_ip/normalize_host answer the same from their cache."""

from __future__ import annotations

import ipaddress

from twisted.internet import tcp
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.ssl import CertificateOptions
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import providedBy

from vtwist.address import normalize_host, parse_ip
from vtwist.transport.internals import LeanTLSFactory, LeanTLSProtocol


class _TCPLike(tcp.Server):
    """Declares what a TCP server transport declares; writes go nowhere."""

    def __init__(self) -> None:  # no socket
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.written.extend(data)

    def getPeer(self) -> None:
        return None

    def getHost(self) -> None:
        return None


class LeanTLSTests(SynchronousTestCase):
    def build(self, factory_type: type, transport: object) -> TLSMemoryBIOProtocol:
        wrapped = ServerFactory.forProtocol(Protocol)
        factory = factory_type(CertificateOptions(), True, wrapped)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(transport)
        return protocol

    def test_same_declarations_as_twisted(self) -> None:
        """Over a TCP-like transport and a StringTransport, the lean protocol ends up
        providing exactly the interfaces Twisted's protocol provides, and sends its
        ClientHello the same way."""
        for make in (_TCPLike, StringTransport):
            stock = self.build(TLSMemoryBIOFactory, make())
            lean = self.build(LeanTLSFactory, make())
            self.assertIsInstance(lean, LeanTLSProtocol)
            self.assertEqual(list(providedBy(lean)), list(providedBy(stock)))
            self.assertEqual(list(providedBy(lean).__iro__), list(providedBy(stock).__iro__))
            self.assertIsNotNone(lean.getHandle())
            sent = lean.transport.written if make is _TCPLike else [lean.transport.value()]
            self.assertTrue(b"".join(sent).startswith(b"\x16\x03"))  # a TLS handshake record


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
