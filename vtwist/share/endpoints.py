"""From a share link to client endpoints, in one call: :func:`endpoint_for_link`.

::

    from twisted.web.client import Agent
    from vtwist.share.endpoints import endpoint_for_link

    through = endpoint_for_link(reactor, "vmess://...")   # any scheme: vmess vless trojan ss
    agent = Agent.usingEndpointFactory(reactor, through)  # http:// and https:// URLs
    endpoint = through.endpoint("example.com", 443)       # an IStreamClientEndpoint

The link becomes the outbound ``vtwist link decode`` prints, built exactly as a config's
outbound is (streamSettings, TLS, mux), so an embedded client behaves like ``vtwist run
--link``. The endpoint-string form is ``clientFromString(reactor,
"vmess:link=<link>:host=example.com:port=443")`` (likewise ``vless:``, ``trojan:``,
``ss:``); :func:`endpoint_string` escapes a link's ``:`` and ``=`` for it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from vtwist.address import Destination
from vtwist.config.loader import parse_config
from vtwist.share.schemes import ShareLink, parse_link
from vtwist.tunnel.dialer import build_outbounds
from vtwist.tunnel.inbound import BuildContext

#: the endpoint-string prefixes, one per link scheme
PREFIXES = ("vmess", "vless", "trojan", "ss")


@implementer(IAgentEndpointFactory)
class LinkEndpoints:
    """Client endpoints through the server a share link names.

    :meth:`endpoint` gives an ``IStreamClientEndpoint`` to any ``host:port`` through the
    server; as an ``IAgentEndpointFactory`` it serves ``Agent.usingEndpointFactory`` (TLS
    on top for ``https://``, checked against the URL's host). ``outbound`` is the
    underlying :class:`~vtwist.interfaces.IOutbound` (``endpointFor(Destination)``, UDP
    through ``packetSession``), ``link`` the parsed link.
    """

    def __init__(self, reactor: Any, link: ShareLink, outbound: Any) -> None:
        self.reactor = reactor
        self.link = link
        self.outbound = outbound

    def endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        """A TCP connection to ``host:port`` (a name is resolved by the server)."""
        return self.outbound.endpointFor(  # type: ignore[no-any-return]
            Destination.tcp(host, port))

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        """``IAgentEndpointFactory``: the endpoint for a ``twisted.web`` URI."""
        host = uri.host.decode("idna") if isinstance(uri.host, bytes) else str(uri.host)
        endpoint = self.endpoint(host, uri.port)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
        return endpoint

    def close(self) -> Any:
        """Close what the outbound keeps open (mux carriers); a Deferred or None."""
        close = getattr(self.outbound, "close", None)
        return close() if close is not None else None


def endpoint_for_link(reactor: Any, link: str) -> LinkEndpoints:
    """Endpoints through the server of ``link`` (``vmess://``, ``vless://``, ``trojan://``,
    ``ss://``). Raises :class:`~vtwist.share.errors.LinkError` (one line naming the field)
    for a malformed link, :class:`~vtwist.config.errors.ConfigError` if its outbound cannot
    be built."""
    parsed = parse_link(link)
    config = parse_config({"outbounds": [parsed.to_outbound()]})
    [outbound] = build_outbounds(config.outbounds, BuildContext(reactor=reactor,
                                                                policy=config.policy))
    return LinkEndpoints(reactor, parsed, outbound)


def escape(text: str) -> str:
    """``text`` with the characters endpoint strings split on (``\\ : =``) escaped."""
    return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")


def endpoint_string(link: str, host: str, port: int) -> str:
    """The ``clientFromString`` description of ``host:port`` through ``link``."""
    scheme = link.partition("://")[0].lower()
    return f"{scheme}:link={escape(link)}:host={escape(host)}:port={port}"


def parse_client(prefix: str, reactor: Any, *args: str, link: str | None = None,
                 host: str | None = None, port: str | None = None) -> IStreamClientEndpoint:
    """The endpoint-string parser behind ``vmess:``, ``vless:``, ``trojan:`` and ``ss:``:
    ``link=`` the whole link (or what follows ``scheme://``), ``host=``, ``port=``."""
    if args:
        raise ValueError(f"{prefix}: endpoint: expected link=, host= and port= only, got "
                         f"{':'.join(args)!r}")
    if not link or not host or not port:
        raise ValueError(f"{prefix}: endpoint needs link=, host= and port= (see "
                         "vtwist.share.endpoints.endpoint_string)")
    if "://" not in link:
        link = f"{prefix}://{link}"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{prefix}: endpoint: port: expected 1-65535, got {port!r}")
    return endpoint_for_link(reactor, link).endpoint(host, int(port))
