"""``python -m vtwist``: see :mod:`vtwist.cli`."""

import sys

from vtwist.cli import main

sys.exit(main())
