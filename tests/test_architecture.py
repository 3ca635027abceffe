"""The package keeps its layering: no import cycles, no upward imports, sans-IO modules stay
free of Twisted, sockets and the clock, and Twisted's private names are touched in one place.

The checks read the source with :mod:`ast`; nothing under ``vtwist/`` is imported. Imports inside
functions count; imports under ``if TYPE_CHECKING:`` do not. Importing ``vtwist.a.b`` counts as
importing that file (or the package's ``__init__``), not its parent packages.
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "vtwist"

#: Layers, low to high. A module may import its own layer and the layers below it.
LAYERS: tuple[str, ...] = (
    "base", "config", "routing", "transport", "tunnel", "proxy", "share", "app")

#: Where every file under ``vtwist/`` sits. Keys are paths relative to ``vtwist/``: a file
#: (``address.py``) or a folder (``config/``, covering everything below it). The longest match
#: wins. A file that no entry covers is a failure: place new modules here.
LAYER_TABLE: dict[str, str] = {
    # base
    "__init__.py": "base",
    "address.py": "base",
    "policy.py": "base",
    "sansio.py": "base",
    "interfaces.py": "base",
    "reactors.py": "base",
    "entropy.py": "base",
    # config
    "config/": "config",
    # routing
    "routing/": "routing",
    "resolver.py": "routing",
    "dns/": "routing",
    # transport
    "transport/": "transport",
    # tunnel
    "tunnel/": "tunnel",
    # proxy
    "proxy/": "proxy",
    # share (links.py and qr.py move into vtwist/share/)
    "share/": "share",
    "links.py": "share",
    "qr.py": "share",
    # app, and the test support that sits on top of everything
    "service.py": "app",
    "runner.py": "app",
    "cli.py": "app",
    "tap.py": "app",
    "genconfig.py": "app",
    "logsetup.py": "app",
    "__main__.py": "app",
    "app/": "app",
    "testing/": "app",
}

#: Modules that must not reach Twisted, sockets, event loops or the clock, directly or through
#: any ``vtwist`` module they import. Paths relative to the repository root.
SANS_IO: tuple[str, ...] = (
    "vtwist/sansio.py",
    "vtwist/entropy.py",
    "vtwist/address.py",
    "vtwist/policy.py",
    "vtwist/proxy/socks/codec.py",
    "vtwist/proxy/http/codec.py",
    "vtwist/proxy/http/settings.py",
    "vtwist/proxy/socks/client_codec.py",
    "vtwist/proxy/http/client_codec.py",
    "vtwist/proxy/upstream.py",
    "vtwist/proxy/credentials.py",
    "vtwist/proxy/vmess/ids.py",
    "vtwist/proxy/vmess/kdf.py",
    "vtwist/proxy/vmess/header.py",
    "vtwist/proxy/vmess/legacy.py",
    "vtwist/proxy/vmess/body.py",
    "vtwist/proxy/vmess/replay.py",
    "vtwist/proxy/sharedreplay.py",
    "vtwist/proxy/vmess/users.py",
    "vtwist/proxy/vmess/handshake.py",
    "vtwist/proxy/vmess/picker.py",
    "vtwist/proxy/shadowsocks/aead.py",
    "vtwist/proxy/shadowsocks/codec.py",
    "vtwist/proxy/shadowsocks/replay.py",
    "vtwist/proxy/shadowsocks/settings.py",
    "vtwist/proxy/trojan/codec.py",
    "vtwist/proxy/trojan/settings.py",
    "vtwist/proxy/fallback/settings.py",
    "vtwist/proxy/fallback/choose.py",
    "vtwist/proxy/fallback/proxyheader.py",
    "vtwist/proxy/vless/codec.py",
    "vtwist/proxy/vless/settings.py",
    "vtwist/proxy/mux/__init__.py",
    "vtwist/app/reverse/control.py",
    "vtwist/config/reverse.py",
    "vtwist/proxy/mux/frame.py",
    "vtwist/proxy/mux/sessions.py",
    "vtwist/transport/__init__.py",
    "vtwist/transport/registry.py",
    "vtwist/transport/settings.py",
    "vtwist/transport/linkfields.py",
    "vtwist/transport/quic/__init__.py",
    "vtwist/transport/quic/settings.py",
    "vtwist/transport/quic/packet.py",
    "vtwist/transport/domainsocket/__init__.py",
    "vtwist/transport/domainsocket/settings.py",
    "vtwist/transport/tcp/__init__.py",
    "vtwist/transport/tcp/settings.py",
    "vtwist/transport/tcp/header.py",
    "vtwist/transport/tls/__init__.py",
    "vtwist/transport/tls/settings.py",
    "vtwist/transport/ws/__init__.py",
    "vtwist/transport/ws/settings.py",
    "vtwist/transport/ws/http.py",
    "vtwist/transport/ws/client_upgrade.py",
    "vtwist/transport/ws/frames.py",
    "vtwist/transport/grpc/__init__.py",
    "vtwist/transport/grpc/framing.py",
    "vtwist/transport/grpc/settings.py",
    "vtwist/transport/grpc/profile.py",
    "vtwist/transport/grpc/links.py",
    "vtwist/transport/h2/__init__.py",
    "vtwist/transport/h2/settings.py",
    "vtwist/transport/h2/profile.py",
    "vtwist/transport/h2/links.py",
    "vtwist/transport/kcp/__init__.py",
    "vtwist/transport/kcp/segment.py",
    "vtwist/transport/kcp/crypt.py",
    "vtwist/transport/kcp/obfs.py",
    "vtwist/transport/kcp/config.py",
    "vtwist/transport/kcp/session.py",
    "vtwist/transport/kcp/sender.py",
    "vtwist/transport/kcp/receiver.py",
    "vtwist/transport/kcp/rtt.py",
    "vtwist/routing/matcher.py",
    "vtwist/dns/settings.py",
    "vtwist/dns/cache.py",
    "vtwist/proxy/dns/settings.py",
    "vtwist/routing/geodata/__init__.py",
    "vtwist/routing/geodata/wire.py",
    "vtwist/routing/geodata/build.py",
    "vtwist/tunnel/sniff/__init__.py",
    "vtwist/tunnel/sniff/http.py",
    "vtwist/tunnel/sniff/tls.py",
    "vtwist/tunnel/stats.py",
    "vtwist/tunnel/sniff/bittorrent.py",
)

#: Top-level modules a sans-IO module may not import.
IO_MODULES: frozenset[str] = frozenset(
    {"twisted", "socket", "asyncio", "select", "selectors", "time", "datetime"})

#: The one module allowed to touch Twisted's private names.
PRIVATE_TWISTED_ALLOWED: frozenset[str] = frozenset({"vtwist/transport/internals.py"})

#: Private attributes of Twisted objects (transports, TLS protocols, ports, reactors) that
#: ``X._name`` is checked against when ``X`` is not a name imported from Twisted.
TWISTED_PRIVATE_ATTRS: frozenset[str] = frozenset({
    "_isSendBufferFull", "_tempDataLen", "_tempDataBuffer", "_sslverify", "_tlsConnection",
    "_appSendBuffer", "_lostTLSConnection", "_tlsShutdownFinished", "_shouldShutdown",
    "_writeDisconnected", "_writeDisconnecting", "_closeWriteConnection",
    "_socketShutdownMethod", "_realPortNumber", "_bindAddress", "_connectDone",
    "_dataReceived", "_postLoseConnection", "_maxWriteSize", "_isFirstWrite",
    "_justStopped", "_reads", "_writes", "_started", "_startedBefore",
})


@dataclass(frozen=True)
class Edge:
    """One import of a ``vtwist`` module."""

    target: str
    line: int


@dataclass
class ModuleInfo:
    """What one file imports."""

    name: str
    path: str  # relative to the root, e.g. ``vtwist/address.py``
    edges: list[Edge] = field(default_factory=list)
    external: dict[str, int] = field(default_factory=dict)  # top-level name -> first line
    private: list[tuple[int, str]] = field(default_factory=list)


def _module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _private_component(dotted: str) -> bool:
    return any(p.startswith("_") and not p.startswith("__") for p in dotted.split("."))


def _single_underscore(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


class _Visitor(ast.NodeVisitor):
    """Collects imports (skipping ``if TYPE_CHECKING:`` bodies) and private Twisted names."""

    def __init__(self, info: ModuleInfo, package: str, known: set[str],
                 root_package: str) -> None:
        self.info = info
        self.package = package  # the package relative imports start from
        self.known = known
        self.root_package = root_package
        self.twisted_names: set[str] = set()

    def _add_internal(self, dotted: str, line: int) -> None:
        # the longest known prefix: an import of a name that is not a module hits its module
        parts = dotted.split(".")
        while parts:
            name = ".".join(parts)
            if name in self.known:
                if name != self.info.name:
                    self.info.edges.append(Edge(name, line))
                return
            parts.pop()

    def _add(self, dotted: str, line: int) -> None:
        top = dotted.split(".")[0]
        if top == self.root_package:
            self._add_internal(dotted, line)
        else:
            self.info.external.setdefault(top, line)
        if top == "twisted" and _private_component(dotted):
            self.info.private.append((line, f"imports {dotted}"))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)
            if alias.name.split(".")[0] == "twisted":
                self.twisted_names.add(alias.asname or "twisted")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        for alias in node.names:
            full = f"{module}.{alias.name}"
            if full.split(".")[0] == self.root_package and full in self.known:
                self._add(full, node.lineno)  # a submodule
            else:
                self._add(module, node.lineno)
            if module.split(".")[0] == "twisted":
                self.twisted_names.add(alias.asname or alias.name)
                if _single_underscore(alias.name) and not _private_component(module):
                    self.info.private.append((node.lineno, f"imports {full}"))

    def visit_Call(self, node: ast.Call) -> None:
        # getattr(t, "_tempDataLen"), setattr(t, "_isSendBufferFull", f), ...
        func = node.func
        if (isinstance(func, ast.Name) and func.id in ("getattr", "setattr", "hasattr", "delattr")
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in TWISTED_PRIVATE_ATTRS):
            self.info.private.append((node.lineno, f"uses {ast.unparse(node)}"))
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _single_underscore(node.attr):
            value = node.value
            owner = value.id if isinstance(value, ast.Name) else None
            if owner not in ("self", "cls") and (
                    node.attr in TWISTED_PRIVATE_ATTRS or owner in self.twisted_names):
                self.info.private.append((node.lineno, f"uses {ast.unparse(node)}"))
        self.generic_visit(node)


def scan(root: Path, package: str = PACKAGE) -> dict[str, ModuleInfo]:
    """Read every ``.py`` under ``root/package`` and return what each imports, by module name."""
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root / package):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                path = Path(dirpath) / filename
                name = _module_name(path.relative_to(root))
                # during a split both routing.py and routing/__init__.py may exist: the package wins
                if name not in files or path.name == "__init__.py":
                    files[name] = path
    known = set(files)
    modules: dict[str, ModuleInfo] = {}
    for name, path in sorted(files.items()):
        rel = path.relative_to(root).as_posix()
        info = ModuleInfo(name, rel)
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        _Visitor(info, pkg, known, package).visit(tree)
        modules[name] = info
    return modules


def find_cycles(modules: Mapping[str, ModuleInfo]) -> list[list[str]]:
    """The shortest cycle through each file that is on one, without repeats, as paths of files
    (first == last)."""
    graph = {name: sorted({e.target for e in info.edges}) for name, info in modules.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0

    def strongconnect(start: str) -> None:  # iterative Tarjan
        nonlocal counter
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            strongconnect(name)

    def shortest_cycle(start: str, members: set[str]) -> list[str]:
        previous: dict[str, str] = {}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for child in graph[node]:
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child in members and child not in previous:
                    previous[child] = node
                    queue.append(child)
        raise AssertionError("no cycle in a strongly connected component")

    found: dict[frozenset[str], list[str]] = {}
    for component in components:
        members = set(component)
        for start in component:
            cycle = shortest_cycle(start, members)
            found.setdefault(frozenset(cycle), cycle)
    return sorted([modules[n].path for n in cycle] for cycle in found.values())


def layer_of(rel: str, table: Mapping[str, str], package: str = PACKAGE) -> str | None:
    """The layer of ``rel`` (a path like ``vtwist/x/y.py``) by the longest entry of ``table``."""
    inner = rel[len(package) + 1:]
    if inner in table:
        return table[inner]
    best = None
    for key in table:
        if key.endswith("/") and inner.startswith(key) and (best is None or len(key) > len(best)):
            best = key
    return table[best] if best is not None else None


def upward_imports(modules: Mapping[str, ModuleInfo], table: Mapping[str, str],
                   layers: Sequence[str] = LAYERS, package: str = PACKAGE) -> list[str]:
    """Every import of a higher layer, and every file the table does not place."""
    rank = {layer: i for i, layer in enumerate(layers)}
    problems = []
    for info in modules.values():
        layer = layer_of(info.path, table, package)
        if layer is None:
            problems.append((info.path, 0, f"classify {info.path}: add it to LAYER_TABLE"))
            continue
        seen = set()
        for edge in info.edges:
            target = modules[edge.target]
            other = layer_of(target.path, table, package)
            if other is None or edge.target in seen:
                continue
            if rank[other] > rank[layer]:
                seen.add(edge.target)
                problems.append((info.path, edge.line,
                                 f"{info.path}:{edge.line} ({layer}) imports {target.path} ({other})"))
    return [text for _, _, text in sorted(problems)]


def io_reach(modules: Mapping[str, ModuleInfo], sans_io: Iterable[str], root: Path,
             io_modules: frozenset[str] = IO_MODULES) -> list[str]:
    """Every sans-IO module that reaches an I/O or clock module, with the import path."""
    by_path = {info.path: info for info in modules.values()}
    problems = []
    for rel in sans_io:
        if rel not in by_path:
            if not (root / rel).exists():
                problems.append(f"listed sans-IO module missing: {rel}")
            continue
        start = by_path[rel].name
        previous: dict[str, str | None] = {start: None}
        queue = deque([start])
        hits = []
        while queue:
            node = queue.popleft()
            for bad in sorted(set(modules[node].external) & io_modules):
                chain = []
                step: str | None = node
                while step is not None:
                    chain.append(modules[step].path)
                    step = previous[step]
                chain.reverse()
                hits.append(f"{rel} reaches {bad}: {' -> '.join(chain + [bad])}")
            for edge in modules[node].edges:
                if edge.target not in previous:
                    previous[edge.target] = node
                    queue.append(edge.target)
        problems.extend(hits)
    return problems


def private_twisted(modules: Mapping[str, ModuleInfo],
                    allowed: frozenset[str] = PRIVATE_TWISTED_ALLOWED) -> list[str]:
    """Every use of a private Twisted name outside the allowed module."""
    found = sorted((info.path, line, what) for info in modules.values()
                   if info.path not in allowed for line, what in info.private)
    return [f"{path}:{line} {what}" for path, line, what in found]


def _report(title: str, problems: Sequence[str]) -> str:
    return f"{title} ({len(problems)}):\n  " + "\n  ".join(problems)


class ArchitectureTests(SynchronousTestCase):
    """The real tree under ``vtwist/`` keeps its shape."""

    def setUp(self) -> None:
        self.modules = scan(ROOT)

    def test_no_cycles(self) -> None:
        """No file-level import cycle."""
        cycles = [" -> ".join(path) for path in find_cycles(self.modules)]
        if cycles:
            self.fail(_report("import cycles", cycles))

    def test_layers(self) -> None:
        """Every file is placed in a layer and imports only its own layer and those below."""
        problems = upward_imports(self.modules, LAYER_TABLE)
        if problems:
            self.fail(_report("upward imports / unplaced files", problems))

    def test_sans_io(self) -> None:
        """Sans-IO modules reach neither Twisted, sockets, event loops nor the clock."""
        problems = io_reach(self.modules, SANS_IO, ROOT)
        if problems:
            self.fail(_report("sans-IO modules reaching I/O", problems))

    def test_private_twisted(self) -> None:
        """Twisted's private modules and attributes are used only in the allowed module."""
        problems = private_twisted(self.modules)
        if problems:
            self.fail(_report("private Twisted names", problems))


class CheckerTests(SynchronousTestCase):
    """The checkers find what they look for, on a small tree written to a temporary folder."""

    FILES = {
        "__init__.py": "",
        "low.py": "def late():\n    import pkg.high\n",
        "high.py": "from . import low\n",
        "clockish.py": "from pkg import helper\n",
        "helper.py": "import time\n",
        "pure.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    import pkg.high\n    import socket\n"
            "from .sub import leaf\n"),
        "sub/__init__.py": "",
        "sub/leaf.py": "X = 1\n",
        "poke.py": (
            "from twisted.internet._sslverify import IOpenSSLTrustRoot\n"
            "from twisted.internet.tcp import Connection\n"
            "def f(t):\n    t._tempDataLen\n    Connection._isSendBufferFull\n"
            "    self._fine\n    t.node._mine\n    getattr(t, '_tempDataBuffer', None)\n"),
        "stray.py": "",
    }
    TABLE = {"__init__.py": "base", "low.py": "base", "clockish.py": "base", "helper.py": "base",
             "pure.py": "base", "sub/": "base", "high.py": "proxy", "poke.py": "tunnel"}

    def setUp(self) -> None:
        self.root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.root)
        for rel, text in self.FILES.items():
            path = self.root / "pkg" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        self.modules = scan(self.root, "pkg")

    def test_imports(self) -> None:
        """Function-level and relative imports count; TYPE_CHECKING imports do not; a submodule
        named in ``from`` counts as that submodule."""
        self.assertEqual([e.target for e in self.modules["pkg.low"].edges], ["pkg.high"])
        self.assertEqual([e.target for e in self.modules["pkg.high"].edges], ["pkg.low"])
        self.assertEqual([e.target for e in self.modules["pkg.pure"].edges], ["pkg.sub.leaf"])
        self.assertEqual(self.modules["pkg.pure"].external, {"typing": 1})

    def test_cycle(self) -> None:
        """A two-module cycle is reported as a path."""
        self.assertEqual(find_cycles(self.modules), [
            ["pkg/high.py", "pkg/low.py", "pkg/high.py"]])

    def test_upward(self) -> None:
        """An import of a higher layer and an unplaced file are reported."""
        self.assertEqual(upward_imports(self.modules, self.TABLE, package="pkg"), [
            "pkg/low.py:2 (base) imports pkg/high.py (proxy)",
            "classify pkg/stray.py: add it to LAYER_TABLE",
        ])

    def test_sans_io(self) -> None:
        """A sans-IO module reaching ``time`` through another module is reported with the path;
        a missing listed module is reported; a clean one is not."""
        problems = io_reach(self.modules, ["pkg/clockish.py", "pkg/pure.py", "pkg/gone.py"],
                            self.root)
        self.assertEqual(problems, [
            "pkg/clockish.py reaches time: pkg/clockish.py -> pkg/helper.py -> time",
            "listed sans-IO module missing: pkg/gone.py",
        ])

    def test_private(self) -> None:
        """Private Twisted modules and attributes are reported outside the allowed module."""
        self.assertEqual(private_twisted(self.modules, frozenset()), [
            "pkg/poke.py:1 imports twisted.internet._sslverify",
            "pkg/poke.py:4 uses t._tempDataLen",
            "pkg/poke.py:5 uses Connection._isSendBufferFull",
            "pkg/poke.py:8 uses getattr(t, '_tempDataBuffer', None)",
        ])
        self.assertEqual(private_twisted(self.modules, frozenset({"pkg/poke.py"})), [])
