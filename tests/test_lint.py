"""The code base stays ruff-clean."""

import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RuffTests(SynchronousTestCase):
    def test_ruff_clean(self) -> None:
        """``ruff check`` reports nothing on the package, plugins, tests and benchmarks."""
        result = subprocess.run(
            [sys.executable, "-m", "ruff", "check", "--no-cache", "vtwist", "tests", "twisted",
             "benchmarks"], cwd=ROOT, capture_output=True, text=True, check=False)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
