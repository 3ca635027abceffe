"""The one path that changes a running inbound's users: the API's ``AlterInbound``
(``AddUserOperation``, ``RemoveUserOperation``) and a reload that only changed the users.

:func:`user_set` gives a :class:`UserSet` for an inbound's factory (VMess, VLESS, Trojan;
Shadowsocks has one account per inbound in 4.34 and is not a user manager there either).
A user added here can connect at once; a removed user's next connection is refused while its
live connections go on, as in V2Ray 4.34 (the connections hold their account).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol


class UserError(Exception):
    """A user operation V2Ray refuses too (same words as 4.34's)."""


class UserSet(Protocol):
    """The users one inbound accepts, changeable while it runs."""

    def accounts(self) -> list[Any]:
        """The accounts (the protocol's own account type) accepted now."""

    def add(self, account: Any) -> None:
        """Accept ``account`` from the next connection on."""

    def remove(self, account: Any) -> bool:
        """Refuse ``account``'s next connections; False when it was not a user."""


class VMessUsers:
    """A VMess inbound's user table (AuthID keys, legacy table) and email index."""

    def __init__(self, factory: Any) -> None:
        self.state = factory.state

    def accounts(self) -> list[Any]:
        """The accounts accepted now."""
        return list(self.state.users.accounts)

    def add(self, account: Any) -> None:
        """Accept ``account``."""
        self.state.users.add(account)
        if account.email:
            self.state.by_email[account.email.lower()] = account

    def remove(self, account: Any) -> bool:
        """Refuse ``account`` from now on."""
        if not self.state.users.remove(account):
            return False
        key = account.email.lower()
        if self.state.by_email.get(key) == account:
            del self.state.by_email[key]
        return True


class _DictUsers:
    """Users in a dict from the wire key (VLESS UUID, Trojan password hash) to the account."""

    attribute = ""

    def __init__(self, factory: Any) -> None:
        self.table: dict[bytes, Any] = getattr(factory, self.attribute)

    def key(self, account: Any) -> bytes:
        """The wire key of ``account``."""
        raise NotImplementedError

    def accounts(self) -> list[Any]:
        """The accounts accepted now."""
        return list(self.table.values())

    def add(self, account: Any) -> None:
        """Accept ``account`` (one with the same key is replaced)."""
        self.table[self.key(account)] = account

    def remove(self, account: Any) -> bool:
        """Refuse ``account`` from now on."""
        key = self.key(account)
        if self.table.get(key) != account:
            return False
        del self.table[key]
        return True


class VLESSUsers(_DictUsers):
    """A VLESS inbound's users by UUID."""

    attribute = "users"

    def key(self, account: Any) -> bytes:
        """The 16 UUID bytes."""
        return account.uuid  # type: ignore[no-any-return]


class TrojanUsers(_DictUsers):
    """A Trojan inbound's users by the hex SHA-224 of their password."""

    attribute = "keys"

    def key(self, account: Any) -> bytes:
        """The 56 hex digits."""
        return account.key  # type: ignore[no-any-return]


#: inbound protocol -> its user set over the inbound's factory
USER_SETS: dict[str, Callable[[Any], UserSet]] = {
    "vmess": VMessUsers, "vless": VLESSUsers, "trojan": TrojanUsers}


def user_set(protocol: str, factory: Any) -> UserSet | None:
    """The :class:`UserSet` of an inbound of ``protocol`` built as ``factory``; None when
    the protocol has no changeable users (socks, shadowsocks, dokodemo-door...)."""
    make = USER_SETS.get(protocol)
    return make(factory) if make is not None else None


def add_user(users: UserSet, account: Any) -> None:
    """The API's AddUser: refused (:class:`UserError`) when a user has the same email."""
    email = getattr(account, "email", "").lower()
    if email and any(a.email.lower() == email for a in users.accounts()):
        raise UserError(f"User {account.email} already exists.")
    users.add(account)


def remove_user(users: UserSet, email: str) -> int:
    """The API's RemoveUser: every user with ``email`` (any case); how many there were.
    :class:`UserError` for an empty email or one no user has."""
    if not email:
        raise UserError("Email must not be empty.")
    key = email.lower()
    gone = [a for a in users.accounts() if a.email.lower() == key]
    if not gone:
        raise UserError(f"User {email} not found.")
    for account in gone:
        users.remove(account)
    return len(gone)


def apply_users(users: UserSet, old: Iterable[Any], new: Iterable[Any]) -> tuple[int, int]:
    """A reload's change of users: the accounts of ``old`` (the config before) missing from
    ``new`` go, those new in ``new`` come; users added through the API stay. Returns
    (added, removed)."""
    old_list, new_list = list(old), list(new)
    removed = sum(1 for a in old_list if a not in new_list and users.remove(a))
    added = 0
    for account in new_list:
        if account not in old_list:
            users.add(account)
            added += 1
    return added, removed
