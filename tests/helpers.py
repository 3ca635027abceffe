"""Trial mixins shared by the test modules."""

from __future__ import annotations

from typing import Any

from vtwist.config.errors import ConfigError
from vtwist.config.loader import parse_config


class ConfigErrorMixin:
    """``assertConfigError(data, message)``: loading the config ``configFor(data)`` fails with
    exactly ``message``. Mix into a trial test case; override :meth:`configFor` to wrap a part
    of a config (a routing object, an inbound) into a whole one."""

    def configFor(self, data: Any) -> Any:
        """The whole config to load for ``data`` (``data`` itself by default)."""
        return data

    def assertConfigError(self, data: Any, message: str) -> ConfigError:
        """Loading ``configFor(data)`` raises a ConfigError whose text is ``message``."""
        with self.assertRaises(ConfigError) as cm:  # type: ignore[attr-defined]
            parse_config(self.configFor(data))
        self.assertEqual(str(cm.exception), message)  # type: ignore[attr-defined]
        return cm.exception
