"""The wheel ships the twistd dropins and the embedded default config."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class WheelTests(SynchronousTestCase):
    def test_wheel_contents(self) -> None:
        out = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, out, True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
             "-w", out, ROOT], capture_output=True, text=True, check=False, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        [wheel] = glob.glob(os.path.join(out, "vtwist-*.whl"))
        names = set(zipfile.ZipFile(wheel).namelist())
        for required in ("twisted/plugins/vtwist_plugin.py",
                         "twisted/plugins/vtwist_kcp_endpoints.py",
                         "twisted/plugins/vtwist_ws_endpoints.py",
                         "twisted/plugins/vtwist_link_endpoints.py",
                         "vtwist/default_config.json", "vtwist/proxy/vmess/server.py",
                         "vtwist/transport/kcp/session.py"):
            self.assertIn(required, names)
        # No __init__.py may shadow Twisted's own packages.
        self.assertNotIn("twisted/__init__.py", names)
        self.assertNotIn("twisted/plugins/__init__.py", names)
        # Every module of the tree is in the wheel (a package missing from pyproject's list
        # works in an editable install and breaks a regular one).
        for path in glob.glob(os.path.join(ROOT, "vtwist", "**", "*.py"), recursive=True):
            self.assertIn(os.path.relpath(path, ROOT).replace(os.sep, "/"), names)
