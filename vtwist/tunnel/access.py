"""Access lines in V2Ray's form, accepted and rejected, from one place.

``from 127.0.0.1:50000 accepted tcp:example.com:443 [socks-in >> direct] email: a@b``
``from 127.0.0.1:50001 rejected socks: invalid username or password``
"""

from __future__ import annotations

from twisted.logger import Logger

from vtwist.address import Destination

access_log = Logger(namespace="vtwist.access")


class AccessLog:
    """Writes access lines unless switched off (``log.access: "none"``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def accepted(self, source: str, destination: Destination, inbound_tag: str | None,
                 outbound_tag: str | None, email: str | None = None) -> None:
        """One connection or UDP session was routed to an outbound."""
        if not self.enabled:
            return
        line = f"from {source} accepted {destination} [{inbound_tag or ''} >> {outbound_tag or ''}]"
        if email:
            line += f" email: {email}"
        access_log.info("{line}", line=line)

    def rejected(self, source: str, protocol: str, why: str) -> None:
        """An inbound refused a client (bad handshake, wrong credentials, probe...)."""
        if self.enabled:
            access_log.info("{line}", line=f"from {source} rejected {protocol}: {why}")
