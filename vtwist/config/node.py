"""Typed, path-aware access to a JSON value, for validating V2Ray configs.

A :class:`Node` wraps one JSON value and its path. Readers (``int``, ``str`` ...) raise
:class:`ConfigError` naming the path and what was expected; :meth:`Node.warn_unknown`
reports keys that no reader asked for, so typos surface as warnings with their path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from vtwist.config.errors import ConfigError
from vtwist.config.known_keys import known_at, suggest

_MISSING: Any = object()


def _describe(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__


class Node:
    """A JSON value at a path; call readers on it, then :meth:`warn_unknown`."""

    def __init__(self, value: Any, path: str = "", warn: Callable[[str], None] | None = None):
        self.value = value
        self.path = path
        #: Where warnings go (shared by every node read from this one).
        self.warn_sink: Callable[[str], None] = warn or (lambda message: None)
        self._seen: set[str] = set()

    # -- structure ---------------------------------------------------------
    def child_path(self, key: str | int) -> str:
        """The path of a key or index below this node."""
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def or_empty(self) -> Node:
        """This node, or an empty object at the same path (and warning sink) if it is null."""
        if self.value is not None:
            return self
        return Node({}, self.path, self.warn_sink)

    def error(self, message: str, key: str | int | None = None) -> ConfigError:
        """A ConfigError at this node (or at one of its keys)."""
        return ConfigError(self.path if key is None else self.child_path(key), message)

    def warn(self, message: str) -> None:
        """Emit a warning about this node."""
        self.warn_sink(f"{self.path}: {message}" if self.path else message)

    def has(self, key: str) -> bool:
        """True if this object has ``key`` (and marks it as known)."""
        self._seen.add(key)
        return isinstance(self.value, dict) and key in self.value

    def get(self, key: str, default: Any = _MISSING) -> Node:
        """The child node at ``key``; a missing key gives ``default`` wrapped (or an error)."""
        obj = self.require_object()
        self._seen.add(key)
        if key in obj and obj[key] is not None:
            return Node(obj[key], self.child_path(key), self.warn_sink)
        if default is _MISSING:
            raise self.error("is required", key)
        return Node(default, self.child_path(key), self.warn_sink)

    def require_object(self) -> dict[str, Any]:
        """The value as a dict, or a ConfigError."""
        if not isinstance(self.value, dict):
            raise self.error(f"expected an object, got {_describe(self.value)}")
        return self.value

    def items(self) -> Iterator[Node]:
        """Child nodes of a JSON array."""
        if not isinstance(self.value, list):
            raise self.error(f"expected an array, got {_describe(self.value)}")
        for i, v in enumerate(self.value):
            yield Node(v, self.child_path(i), self.warn_sink)

    def keys(self) -> list[str]:
        """Keys of a JSON object (marking them all as known)."""
        obj = self.require_object()
        self._seen.update(obj)
        return list(obj)

    def warn_unknown(self, known: tuple[str, ...] = ()) -> None:
        """Warn about keys of this object that were never read."""
        if not isinstance(self.value, dict):
            return
        candidates = (*self._seen, *known, *known_at(self.path))
        for key in self.value:
            if key not in self._seen and key not in known:
                guess = suggest(key, candidates)
                hint = f' (did you mean "{guess}"?)' if guess else ""
                self.warn_sink(f"{self.child_path(key)}: unknown field, ignored{hint}")

    # -- scalar readers ----------------------------------------------------
    def int(self, key: str, default: Any = _MISSING, lo: int | None = None,
            hi: int | None = None) -> int:
        """An integer at ``key``, within [lo, hi] when given. Numeric strings are accepted."""
        node = self.get(key, default)
        return node.as_int(lo, hi)

    def as_int(self, lo: int | None = None, hi: int | None = None) -> int:
        """This value as an integer within [lo, hi]."""
        v = self.value
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            v = int(v.strip())
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        rng = ""
        if lo is not None and hi is not None:
            rng = f" {lo}-{hi}"
        elif lo is not None:
            rng = f" >= {lo}"
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"expected an integer{rng}, got {_describe(self.value)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise self.error(f"expected an integer{rng}, got {_describe(self.value)}")
        return v

    def str(self, key: str, default: Any = _MISSING, choices: tuple[str, ...] | None = None,
            lower: bool = False) -> str:
        """A string at ``key``, optionally one of ``choices`` (compared lower-cased if asked)."""
        return self.get(key, default).as_str(choices, lower)

    def as_str(self, choices: tuple[str, ...] | None = None, lower: bool = False) -> str:
        """This value as a string, optionally one of ``choices``."""
        v = self.value
        if not isinstance(v, str):
            raise self.error(f"expected a string, got {_describe(v)}")
        if lower:
            v = v.lower()
        if choices is not None and v not in choices:
            raise self.error(f"expected one of {', '.join(choices)}, got {_describe(self.value)}")
        return v

    def bool(self, key: str, default: Any = _MISSING) -> bool:
        """A boolean at ``key``."""
        node = self.get(key, default)
        if not isinstance(node.value, bool):
            raise node.error(f"expected true or false, got {_describe(node.value)}")
        return node.value

    def str_list(self, key: str, default: Any = _MISSING) -> list[str]:
        """A list of strings at ``key`` (a single string is accepted as a one-item list)."""
        node = self.get(key, default)
        if isinstance(node.value, str):
            return [node.value]
        return [item.as_str() for item in node.items()]

    def comma_list(self, key: str) -> list[str]:
        """V2Ray's StringList at ``key``: an array of strings, or one string split at commas."""
        item = self.get(key, [])
        if isinstance(item.value, str):
            return item.value.split(",")
        return [i.as_str() for i in item.items()]

    def port(self, key: str, default: Any = _MISSING) -> int:
        """A TCP/UDP port 1-65535 at ``key``."""
        return self.int(key, default, 1, 65535)
