"""VMess accounts and the server's user table (AEAD AuthID matching, legacy table).

Finding the user behind an AuthID means trying every user's AES key: the ECB decryptor of
each user is built once, so a lookup among 1,000 users is about a millisecond.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from vtwist.proxy.vmess import ids
from vtwist.proxy.vmess.body import SEC_AES128_GCM, SEC_CHACHA20_POLY1305, SEC_NONE
from vtwist.proxy.vmess.header import AUTH_ID_WINDOW, auth_id_key, check_auth_id_plain
from vtwist.proxy.vmess.legacy import LegacyAuthTable, LegacyMatch


def resolve_security(name: str) -> int:
    """The wire security for a client's ``security`` string, resolved like V2Ray 4.34.

    ``auto``, empty and unknown strings (``zero``, ``legacy``, ``aes-128-cfb`` too) become
    AES-128-GCM on amd64/arm64/s390x and ChaCha20-Poly1305 elsewhere.
    """
    name = (name or "").lower()
    if name == "aes-128-gcm":
        return SEC_AES128_GCM
    if name == "chacha20-poly1305":
        return SEC_CHACHA20_POLY1305
    if name == "none":
        return SEC_NONE
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "aarch64", "arm64", "s390x"):
        return SEC_AES128_GCM
    return SEC_CHACHA20_POLY1305


@dataclass(frozen=True, slots=True)
class Account:
    """A VMess user: UUID bytes, alterId, level, email and (client side) security."""

    uuid: bytes
    alter_id: int = 0
    level: int = 0
    email: str = ""
    security: str = "auto"
    cmd_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.uuid) != 16:
            raise ValueError("uuid must be 16 bytes")
        if not 0 <= self.alter_id <= 65535:
            raise ValueError("alterId must be 0..65535")
        object.__setattr__(self, "cmd_key", ids.cmd_key(self.uuid))

    @classmethod
    def from_text(cls, uuid: str, alter_id: int = 0, level: int = 0, email: str = "",
                  security: str = "auto") -> Account:
        """An account from a textual UUID."""
        return cls(ids.parse_uuid(uuid), alter_id, level, email, security)

    @property
    def uuid_text(self) -> str:
        """The dashed UUID."""
        return ids.format_uuid(self.uuid)

    @property
    def label(self) -> str:
        """The email if set, else the UUID's first 8 hex digits (for logs: never the whole
        UUID, it is the user's secret)."""
        return self.email or ids.log_uuid(self.uuid)

    @property
    def uses_aead(self) -> bool:
        """A 4.34 client uses the AEAD header when alterId is 0."""
        return self.alter_id == 0

    def all_ids(self) -> list[bytes]:
        """[main id, alter 1, ..., alter n]."""
        return [self.uuid, *ids.alter_ids(self.uuid, self.alter_id)]


@dataclass(frozen=True, slots=True)
class AEADMatch:
    """Result of matching an AuthID: the user index, its timestamp and skew (ts - now)."""

    user_index: int
    timestamp: int
    skew: float
    in_window: bool


class UserTable:
    """All users of one inbound; finds who sent an AuthID or a legacy auth."""

    def __init__(self, accounts: Iterable[Account], legacy: bool = True,
                 window: int = AUTH_ID_WINDOW) -> None:
        self.accounts: list[Account] = list(accounts)
        self.window = window
        self._decryptors = [
            Cipher(algorithms.AES(auth_id_key(a.cmd_key)), modes.ECB()).decryptor()
            for a in self.accounts
        ]
        self.legacy_enabled = legacy
        self._legacy: LegacyAuthTable | None = None

    def __len__(self) -> int:
        return len(self.accounts)

    def add(self, account: Account) -> None:
        """One more user (a dynamic-port account made for a detour); the legacy table is
        rebuilt on its next use."""
        self.accounts.append(account)
        self._decryptors.append(
            Cipher(algorithms.AES(auth_id_key(account.cmd_key)), modes.ECB()).decryptor())
        self._legacy = None

    def remove(self, account: Account) -> bool:
        """Forget ``account`` (the API's RemoveUser, a reload): its next connections are
        refused, live ones go on. False when it was not a user."""
        try:
            index = self.accounts.index(account)
        except ValueError:
            return False
        del self.accounts[index]
        del self._decryptors[index]
        self._legacy = None
        return True

    def match_aead(self, auth_id: bytes, now: float) -> AEADMatch | None:
        """The first user whose key opens ``auth_id`` with a timestamp in the window.

        If some user's key gives a valid checksum but the time is out of the window, that
        match is returned with ``in_window=False`` (for the log); None if nobody matches.
        """
        block = bytes(auth_id)
        skewed: AEADMatch | None = None
        for index, dec in enumerate(self._decryptors):
            plain = dec.update(block)
            ts = check_auth_id_plain(plain)
            if ts is None:
                continue
            skew = ts - now
            if abs(skew) <= self.window:
                return AEADMatch(index, ts, skew, True)
            if skewed is None:
                skewed = AEADMatch(index, ts, skew, False)
        return skewed

    @property
    def legacy_table(self) -> LegacyAuthTable:
        """The legacy HMAC table (built on first use)."""
        if self._legacy is None:
            self._legacy = LegacyAuthTable([a.all_ids() for a in self.accounts])
        return self._legacy

    def match_legacy(self, auth: bytes, now: float) -> LegacyMatch | None:
        """The legacy match for a 16-byte auth, or None (also when legacy is off)."""
        if not self.legacy_enabled or not self.accounts:
            return None
        return self.legacy_table.lookup(auth, now)

    def taint_legacy(self, auth: bytes) -> None:
        """Refuse this legacy auth value from now on."""
        if self._legacy is not None:
            self._legacy.taint(auth)
