"""Finding and opening geo data files: where V2Ray looks, read lazily, each entry decoded once.

Lookup, as V2Ray 4.34 (``platform.GetAssetLocation``), after the directories vtwist's
``--assets DIR`` adds: the ``V2RAY_LOCATION_ASSET`` directory (or, when that is unset, the
executable's directory), then ``/usr/local/share/v2ray`` and ``/usr/share/v2ray``.

A file is memory-mapped only while an entry is read from it: the first lookup walks the
entries' headers (their lengths and country codes) and keeps that index; each named entry is
then decoded once and shared by every rule (and the ``dns`` section) naming it, for as long
as some matcher holds it. Nothing else of the file stays in memory.
"""

from __future__ import annotations

import mmap
import os
import re
import sys
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from vtwist.config.errors import ConfigError
from vtwist.routing.geodata.build import geoip_set, geosite_matcher
from vtwist.routing.geodata.wire import Entry, GeoDataError, index
from vtwist.routing.matcher import DomainMatcher, IPSet

ASSET_ENV = "V2RAY_LOCATION_ASSET"
SYSTEM_DIRS = ("/usr/local/share/v2ray", "/usr/share/v2ray")

_T = TypeVar("_T", IPSet, DomainMatcher)

#: Directories ``--assets DIR`` added, searched before V2Ray's.
_extra_dirs: list[str] = []


def add_asset_dir(directory: str) -> None:
    """Search ``directory`` first for geo data files (vtwist's ``--assets DIR``)."""
    if directory not in _extra_dirs:
        _extra_dirs.insert(0, directory)


def asset_dirs(extra: Sequence[str] = (), env: Mapping[str, str] | None = None,
               executable: str | None = None) -> list[str]:
    """The directories searched for an asset, in order."""
    env = os.environ if env is None else env
    first = env.get(ASSET_ENV) or os.path.dirname(executable or sys.executable)
    return [*extra, first, *SYSTEM_DIRS]


class GeoAssets:
    """Geo data files and the entries decoded from them (a cache shared by all rules).

    ``dirs``: where to look (default: :func:`asset_dirs` at each lookup, so a changed
    environment counts). Errors are :class:`ConfigError` naming the rule's JSON path and
    the file.
    """

    def __init__(self, dirs: Sequence[str] | None = None) -> None:
        self.dirs = list(dirs) if dirs is not None else None
        self._indexes: dict[str, tuple[tuple[int, int], dict[str, Entry]]] = {}
        self._decoded: weakref.WeakValueDictionary[tuple[object, ...], IPSet | DomainMatcher]
        self._decoded = weakref.WeakValueDictionary()
        #: how many entries were decoded (tests check that shared lists decode once)
        self.decodes = 0

    def search_dirs(self) -> list[str]:
        """The directories searched, in order."""
        return self.dirs if self.dirs is not None else asset_dirs(_extra_dirs)

    def locate(self, name: str) -> str | None:
        """The path of asset ``name`` (None when no directory has it)."""
        for directory in self.search_dirs():
            path = os.path.join(directory, name.lstrip("/"))
            if os.path.isfile(path):
                return path
        return None

    def geoip(self, file: str, code: str, rule: str, path: str) -> IPSet:
        """The ranges of ``code`` in ``file`` (``rule`` and ``path`` name it in errors)."""
        return self._get(("ip", file, code.lower()), file, code, rule, path, geoip_set)

    def geosite(self, file: str, code: str, attrs: tuple[str, ...], rule: str,
                path: str, warn: Callable[[str], None] | None = None) -> DomainMatcher:
        """The domains of ``code`` in ``file``, only those with every attribute in ``attrs``.

        A regexp Python cannot compile is a :class:`ConfigError`, or with ``warn``, left out
        with a warning (once, when the list is decoded).
        """
        attrs = tuple(sorted({a.lower() for a in attrs}))

        def build(buf: object, entry: Entry) -> DomainMatcher:
            skipped: list[tuple[str, str]] | None = [] if warn is not None else None
            matcher = geosite_matcher(buf, entry, attrs, skipped)
            for pattern, reason in skipped or ():
                assert warn is not None
                warn(f"{path}: {rule!r}: regexp {pattern!r} of {file} left out: Python's re "
                     f"cannot compile it ({reason})")
            return matcher

        return self._get(("site", file, code.lower(), attrs), file, code, rule, path, build)

    def has_file(self, file: str) -> bool:
        """True when ``file`` is found in one of the directories."""
        return self.locate(file) is not None

    def _get(self, key: tuple[object, ...], file: str, code: str, rule: str, path: str,
             build: Callable[[object, Entry], _T]) -> _T:
        found = self.locate(file)
        if found is None:
            where = ", ".join(self.search_dirs())
            raise ConfigError(path, f"{rule!r}: {file} not found (looked in {where}; set "
                                    f"{ASSET_ENV} or vtwist's --assets DIR)")
        try:
            st = os.stat(found)
        except OSError as e:
            raise ConfigError(path, f"{rule!r}: cannot read {found}: {e.strerror}") from None
        key = (*key, found, st.st_mtime_ns, st.st_size)  # a replaced file is read again
        cached = self._decoded.get(key)
        if cached is not None:
            return cached  # type: ignore[return-value]
        try:
            with open(found, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    buf: object = b""
                else:
                    buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                try:
                    entries = self._index(found, f, size, buf)
                    entry = entries.get(code.lower())
                    if entry is None:
                        raise ConfigError(path, f"{rule!r}: no list {code!r} in {found} "
                                                f"({len(entries)} lists)")
                    result = build(buf, entry)
                finally:
                    if isinstance(buf, mmap.mmap):
                        buf.close()
        except OSError as e:
            raise ConfigError(path, f"{rule!r}: cannot read {found}: {e.strerror}") from None
        except GeoDataError as e:
            raise ConfigError(path, f"{rule!r}: {found} is damaged or not a V2Ray "
                                    f"geo data file: {e}") from None
        except re.error as e:
            raise ConfigError(path, f"{rule!r}: {found} holds a regexp Python cannot "
                                    f"compile: {e}") from None
        self.decodes += 1
        self._decoded[key] = result
        return result

    def _index(self, found: str, f: object, size: int, buf: object) -> dict[str, Entry]:
        st = os.fstat(f.fileno())  # type: ignore[attr-defined]
        stamp = (st.st_mtime_ns, size)
        cached = self._indexes.get(found)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        entries = index(buf, size)
        self._indexes[found] = (stamp, entries)
        return entries


_shared: GeoAssets | None = None


def shared_assets() -> GeoAssets:
    """The process's :class:`GeoAssets` (rules and the ``dns`` section share its entries)."""
    global _shared
    if _shared is None:
        _shared = GeoAssets()
    return _shared
