"""Which VMess server and user the next connection takes (no Twisted here).

As V2Ray 4.34's round-robin server picker: the configured ``vnext`` servers and users in turn,
plus the servers a server offered with a SwitchAccount response command (``detour``, the
dynamic-port feature), each until its offer expires. The account a SwitchAccount offers uses
the legacy body security, as V2Ray's client gives it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtwist.proxy.vmess.body import SEC_LEGACY
from vtwist.proxy.vmess.header import SwitchAccount
from vtwist.proxy.vmess.settings import VMessServer
from vtwist.proxy.vmess.users import Account

#: Offered servers kept at once; the oldest offer goes beyond this (V2Ray keeps them all).
MAX_OFFERS = 16


@dataclass(frozen=True)
class ServerChoice:
    """A server, the account to use there, and (for an offer) its security and expiry."""

    server: VMessServer
    account: Account
    security: int | None = None
    expires: float | None = None


class ServerPicker:
    """Round robin over the configured servers/users and the live offers."""

    def __init__(self, servers: list[VMessServer]) -> None:
        self.configured = [ServerChoice(s, u) for s in servers for u in s.users]
        self.offers: dict[tuple[str, int, bytes], ServerChoice] = {}
        self._next = 0

    def pick(self, now: float) -> ServerChoice:
        """The next choice at wall-clock time ``now``."""
        if self.offers:
            for key in [k for k, c in self.offers.items() if c.expires <= now]:  # type: ignore[operator]
                del self.offers[key]
        choices = self.configured + list(self.offers.values()) if self.offers \
            else self.configured
        choice = choices[self._next % len(choices)]
        self._next += 1
        return choice

    def offer(self, command: SwitchAccount, origin: str, now: float) -> ServerChoice:
        """Take a SwitchAccount from server ``origin`` (its host when the command names
        none); a repeated offer refreshes its expiry instead of adding a second entry."""
        host = command.host or origin
        account = Account(command.uuid, command.alter_ids, command.level)
        choice = ServerChoice(VMessServer(host, command.port, [account]), account, SEC_LEGACY,
                              now + 60 * command.valid_minutes)
        key = (host, command.port, command.uuid)
        self.offers.pop(key, None)
        self.offers[key] = choice
        while len(self.offers) > MAX_OFFERS:
            del self.offers[next(iter(self.offers))]
        return choice
