"""Every README code block marked ``<!-- example: NAME -->`` runs, as a user would run it
(``python FILE``), against local servers: the constants at its top (``LINK``, ``SERVER``,
``USER_ID``, ``URL``, ``KCP_PORT``, ``SOCKS_PORT``) are pointed at them first."""

from __future__ import annotations

import os
import re
import sys
import uuid
from typing import Any

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.netutil import free_port
from tests.services import serve_web, start_service
from vtwist.share.outbound import inbound_to_outbound, outbound_to_link

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
MARK = re.compile(r"<!-- example: ([\w-]+) -->\n```python\n(.*?)```", re.S)

#: what each example prints when it worked
EXPECTED = {
    "agent-link": "200 15 bytes",
    "agent-vmess": "200 15 bytes",
    "kcp-raw": "hello over mKCP",
    "multiservice": "SOCKS5 listening on [",
}


def examples() -> dict[str, str]:
    """The marked blocks of README.md, by name."""
    with open(README, encoding="utf-8") as f:
        return dict(MARK.findall(f.read()))


def point_at(code: str, constants: dict[str, str]) -> str:
    """``code`` with each ``NAME = ...`` line at the top level given ``constants[NAME]``."""
    for name, value in constants.items():
        code, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", code, flags=re.M)
        assert count <= 1, name
    return code


class MarkedTests(SynchronousTestCase):
    def test_every_example_has_an_expectation(self) -> None:
        """The README has the marked examples, and this test knows what each prints."""
        self.assertEqual(set(examples()), set(EXPECTED))


class ReadmeExampleTests(TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.web = serve_web(self, {b"": b"hello from web\n"})
        user = str(uuid.uuid4())
        self.vmess_port = free_port()
        inbound = {"protocol": "vmess", "listen": "127.0.0.1", "port": self.vmess_port,
                   "settings": {"clients": [{"id": user}]}}
        yield start_service({"inbounds": [inbound], "outbounds": [{"protocol": "freedom"}]},
                            self)
        self.constants = {
            "LINK": repr(outbound_to_link(inbound_to_outbound(inbound, "127.0.0.1"),
                                          warn=lambda _: None).to_link()),
            "SERVER": repr(("127.0.0.1", self.vmess_port)),
            "USER_ID": repr(user),
            "URL": repr(f"http://127.0.0.1:{self.web}/".encode()),
            "KCP_PORT": str(free_port(udp_too=True)),
            "SOCKS_PORT": str(free_port()),
        }

    @defer.inlineCallbacks
    def run_example(self, name: str) -> Any:
        code = point_at(examples()[name], self.constants)
        path = os.path.abspath(self.mktemp() + ".py")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)
        out, err, status = yield getProcessOutputAndValue(
            sys.executable, [path], env={**os.environ, "PYTHONPATH": ROOT}, path=ROOT)
        self.assertEqual(status, 0, (out + err).decode(errors="replace"))
        self.assertIn(EXPECTED[name], out.decode(), err.decode(errors="replace"))

    def test_agent_link(self) -> Any:
        return self.run_example("agent-link")

    def test_agent_vmess(self) -> Any:
        return self.run_example("agent-vmess")

    def test_kcp_raw(self) -> Any:
        return self.run_example("kcp-raw")

    def test_multiservice(self) -> Any:
        return self.run_example("multiservice")


