"""Link errors, and where link warnings go by default."""

from __future__ import annotations

from collections.abc import Callable

from vtwist.transport import registry
from vtwist.transport.linkfields import LinkFieldError

Warn = Callable[[str], None]


class LinkError(LinkFieldError):
    """A malformed or unsupported link (or outbound); ``field`` names the culprit."""

    def __init__(self, field: str, message: str, what: str = "invalid vmess link"):
        self.field = field
        self.message = message
        self.what = what
        ValueError.__init__(self, f"{what}: {field}: {message}")


class UnsupportedLinkError(LinkError):
    """A well-formed link asking for something vtwist cannot run (a transport, a cipher, a
    plugin, XTLS ...); subscriptions skip it as unsupported rather than malformed."""


class UnsupportedTransportError(UnsupportedLinkError):
    """The link asks for a transport vtwist does not implement (h2, quic, grpc)."""

    def __init__(self, network: str, field: str = "net"):
        self.network = network
        known = registry.lookup(network)
        if known is not None and known.link is None:  # domainsocket: a local socket
            reason = f"transport {network!r} has no share-link form"
        else:
            reason = f"transport {network!r} is not supported by vtwist yet"
        super().__init__(field, f"{reason} (supported: {', '.join(registry.link_names())})")


def relabel(error: LinkError, what: str) -> LinkError:
    """``error`` (the same object, same class) with its leading words set to ``what``."""
    error.what = what
    error.args = (f"{what}: {error.field}: {error.message}",)
    return error


def default_warn(message: str) -> None:
    """Log a link warning through Twisted's logger."""
    from twisted.logger import Logger

    Logger(namespace="vtwist.links").warn("{text}", text=message)
