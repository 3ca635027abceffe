"""The VMess inbound's ``detour``: a dynamic port offered in every response header.

As V2Ray 4.34's ``generateCommand``: ask the inbound tagged ``detour.to`` for a random port
of its (and that port's VMess user table), get there the account of the requesting user's
email (made up on first use: a random UUID with the dynamic inbound's ``default`` alterId
and level), and answer with a SwitchAccount command (response command 1): port, UUID,
alterId, level, minutes valid (at most 255). The client then uses that port and account.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from vtwist.proxy.vmess.header import SwitchAccount
from vtwist.proxy.vmess.users import Account

log = Logger(namespace="vtwist.vmess.inbound")


class Detour:
    """``detour(account) -> SwitchAccount | None`` for a VMess server factory.

    ``inbounds`` maps inbound tags to allocators (``pick() -> (factory, port, minutes) |
    None``, see :mod:`vtwist.app.allocate`), filled while the service builds; looked up at
    each request, so the target may be declared after this inbound.
    """

    def __init__(self, inbounds: dict[str, Any], tag: str) -> None:
        self.inbounds = inbounds
        self.tag = tag
        self._warned = False

    def __call__(self, account: Account) -> SwitchAccount | None:
        allocator = self.inbounds.get(self.tag)
        picked = allocator.pick() if allocator is not None else None
        if picked is None:
            if not self._warned:
                self._warned = True
                log.warn("vmess detour: no listening inbound with tag {tag!r}; no dynamic "
                         "port offered", tag=self.tag)
            return None
        factory, port, minutes = picked
        state = getattr(factory, "state", None)
        if state is None or not hasattr(state, "user_for_email"):
            return None  # 4.34: the detour target is not a VMess inbound
        user = state.user_for_email(account.email)
        return SwitchAccount("", port, user.uuid, user.alter_id, user.level,
                             min(max(minutes, 0), 255))
