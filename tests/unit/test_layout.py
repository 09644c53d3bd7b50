"""The package layout, enforced: who may import whom (docs/design.md draws the same picture).

Every module under gateway/ and drivers/ is parsed with ast and every import is checked,
function-level (lazy) imports included, against these rules:

- gateway.core is pure: it imports no I/O library (asyncio, socket, sqlite3, MQTT, Modbus,
  serial, HTTP, ...), no third-party package at all, and nothing of sensegate but itself;
- gateway.config reads files into the core model: it imports only the core and itself;
- drivers/ import only the core of sensegate;
- gateway.runtime (lifecycle, systemd, metrics, logs, tls) serves both daemons: it imports
  nothing from the edge daemon, the bridge, the commands or the simulators;
- the edge daemon (gateway.edge) and the central bridge (gateway.bridge) never import each other;
- nothing in the product imports the simulators and the demo (gateway.sim). The one door is
  gateway.commands.cli, which dispatches `sensegate demo` and `sensegate simulate` and may
  import gateway.sim *inside the function* that runs those commands, never at module level:
  `sensegate run` then never loads it.

A violation that is already known and being fixed elsewhere is listed in KNOWN_VIOLATIONS
with the reason; that list is meant to be emptied, never grown.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "drivers")

# Standard-library modules that do I/O, talk to the OS or run concurrently: not in the core.
IO_STDLIB = frozenset({
    "asyncio", "socket", "ssl", "select", "selectors", "signal", "sqlite3", "dbm", "shelve",
    "http", "urllib", "ftplib", "smtplib", "socketserver", "xmlrpc", "email", "mailbox",
    "subprocess", "multiprocessing", "concurrent", "threading", "_thread", "mmap", "fcntl",
    "termios", "tty", "pty", "io", "os", "shutil", "tempfile", "glob", "pathlib", "logging",
    "sys", "platform", "ctypes", "webbrowser", "wsgiref", "zipfile", "tarfile", "gzip",
})
# Pure string functions inside an I/O package: allowed in the core.
PURE_STDLIB = frozenset({"urllib.parse"})
SENSEGATE = ("gateway", "drivers")
PARTS_ABOVE_CORE = ("gateway.config", "gateway.edge", "gateway.bridge", "gateway.runtime",
                    "gateway.commands", "gateway.sim", "drivers")
SIM_DOOR = "gateway.commands.cli"  # may import gateway.sim lazily, inside a function

# (importing module, imported module): why it is allowed for now. Empty this list.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
}


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module, e.g. "gateway.edge.daemon"
    target: str  # the imported module, absolute, e.g. "gateway.runtime.systemd"
    line: int
    lazy: bool  # inside a function (or method) body


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def violation(imp: Import) -> str | None:
    """Why this import breaks the layout, or None when it is allowed."""
    mod, target = imp.module, imp.target
    if _within(mod, "gateway.core"):
        if _top(target) in SENSEGATE:
            if not _within(target, "gateway.core") and target != "gateway":
                return "the core imports nothing of sensegate but itself"
        elif _top(target) in IO_STDLIB and target not in PURE_STDLIB:
            return "the core imports no I/O library"
        elif _top(target) not in sys.stdlib_module_names and _top(target) != "__future__":
            return "the core imports no third-party package"
    if _within(mod, "gateway.config") and _top(target) in SENSEGATE and not (
        _within(target, "gateway.config") or _within(target, "gateway.core") or target == "gateway"
    ):
        return "the config layer imports only the core and itself"
    if _within(mod, "drivers") and _within(target, "gateway") and not _within(
        target, "gateway.core"
    ):
        return "drivers import only the core of sensegate"
    if _within(mod, "gateway.runtime") and any(
        _within(target, p) for p in ("gateway.edge", "gateway.bridge", "gateway.commands",
                                     "gateway.sim")
    ):
        return "the runtime imports no daemon, command or simulator"
    if _within(mod, "gateway.edge") and _within(target, "gateway.bridge"):
        return "the edge daemon does not import the bridge"
    if _within(mod, "gateway.bridge") and _within(target, "gateway.edge"):
        return "the bridge does not import the edge daemon"
    if _within(target, "gateway.sim") and not _within(mod, "gateway.sim"):
        if mod == SIM_DOOR and imp.lazy:
            return None
        if mod == SIM_DOOR:
            return "the CLI imports the simulators only inside the command that runs them"
        return "nothing in the product imports the simulators or the demo"
    return None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.depth = 0
        self.found: list[Import] = []

    def _add(self, target: str, node: ast.stmt) -> None:
        self.found.append(Import(self.module, target, node.lineno, self.depth > 0))

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base)
            base_name = f"{prefix}.{node.module}" if node.module else prefix
        else:
            base_name = node.module or ""
        # `from gateway.runtime import systemd` imports the module gateway.runtime.systemd
        # when there is one; check both the package and the submodule.
        self._add(base_name, node)
        for alias in node.names:
            candidate = f"{base_name}.{alias.name}"
            if _module_path(candidate) is not None:
                self._add(candidate, node)


def _module_path(name: str) -> Path | None:
    if _top(name) not in PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def imports_in(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import statement of a module's source, with its target made absolute."""
    collector = _Collector(module, is_package)
    collector.visit(ast.parse(source))
    return collector.found


def product_modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found.append((".".join(parts), path))
    return found


def all_imports() -> list[Import]:
    return [
        imp
        for module, path in product_modules()
        for imp in imports_in(path.read_text(encoding="utf-8"), module,
                              is_package=path.name == "__init__.py")
    ]


# -- the checker itself, on synthetic modules ---------------------------------------------

CHECKER_CASES = [
    # (importing module, source, expected reasons: one per offending statement, in order)
    ("gateway.core.x", "import math\nimport json\nfrom typing import Any\n", []),
    ("gateway.core.x", "import asyncio\n", ["the core imports no I/O library"]),
    ("gateway.core.x", "def f():\n    import sqlite3\n", ["the core imports no I/O library"]),
    ("gateway.core.x", "from urllib.request import urlopen\n",
     ["the core imports no I/O library"]),
    ("gateway.core.x", "from urllib.parse import quote\n", []),
    ("gateway.core.x", "import pymodbus\n", ["the core imports no third-party package"]),
    ("gateway.core.x", "import prometheus_client\n", ["the core imports no third-party package"]),
    ("gateway.core.x", "from gateway.edge.outbox import Outbox\n",
     ["the core imports nothing of sensegate but itself"]),
    ("gateway.core.x", "from ..config import load\n",
     ["the core imports nothing of sensegate but itself"]),
    ("gateway.core.x", "from .model import Reading\n", []),
    ("gateway.core.x", "import drivers.bus\n",
     ["the core imports nothing of sensegate but itself"]),
    ("gateway.edge.x", "from gateway.bridge.sink import Sink\n",
     ["the edge daemon does not import the bridge"]),
    ("gateway.bridge.x", "def f():\n    from gateway.edge import outbox\n",
     ["the bridge does not import the edge daemon"]),
    ("gateway.edge.x", "from gateway.sim.simulator import S\n",
     ["nothing in the product imports the simulators or the demo"]),
    ("gateway.commands.cli", "from gateway.sim import demo\n",
     ["the CLI imports the simulators only inside the command that runs them"]),
    ("gateway.commands.cli", "def main():\n    from gateway.sim import demo\n", []),
    ("gateway.commands.check", "def main():\n    from gateway.sim import demo\n",
     ["nothing in the product imports the simulators or the demo"]),
    ("gateway.sim.demo", "from gateway.sim.simulator import S\nfrom gateway.edge import daemon\n",
     []),
    ("gateway.runtime.x", "from gateway.edge.daemon import Daemon\n",
     ["the runtime imports no daemon, command or simulator"]),
    ("gateway.runtime.x", "import asyncio\nfrom gateway.core.errors import ConfigError\n", []),
    ("gateway.config.x", "from gateway.runtime.logs import register_secret\n",
     ["the config layer imports only the core and itself"]),
    ("drivers.x", "from gateway.edge.outbox import Outbox\n",
     ["drivers import only the core of sensegate"]),
    ("drivers.x", "from gateway.core.model import Reading\nimport pymodbus\n", []),
]


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    CHECKER_CASES,
    ids=[f"{m}:{s.strip().splitlines()[-1].strip()}" for m, s, _ in CHECKER_CASES],
)
def test_checker_finds_violations(module: str, source: str, expected: list[str]) -> None:
    per_statement = {
        (i.line, reason): None
        for i in imports_in(source, module)
        if (reason := violation(i)) is not None
    }
    assert [reason for _, reason in per_statement] == expected


def test_collector_sees_lazy_and_relative_imports() -> None:
    found = imports_in(
        "from . import model\n"
        "async def f():\n    from ..runtime import systemd\n",
        "gateway.core.decode",
    )
    assert [(i.target, i.lazy) for i in found] == [
        ("gateway.core", False),
        ("gateway.core.model", False),
        ("gateway.runtime", True),
        ("gateway.runtime.systemd", True),
    ]


# -- the real tree -------------------------------------------------------------------------


def test_every_product_module_is_seen() -> None:
    modules = {m for m, _ in product_modules()}
    assert {"gateway.core.model", "gateway.edge.daemon", "gateway.bridge.service",
            "gateway.runtime.metrics", "gateway.commands.cli", "drivers.bus"} <= modules


def test_layout_rules_hold() -> None:
    broken = []
    for imp in all_imports():
        reason = violation(imp)
        if reason is not None and (imp.module, imp.target) not in KNOWN_VIOLATIONS:
            broken.append(f"{imp.module}:{imp.line} imports {imp.target}: {reason}")
    assert broken == []


def test_known_violations_are_still_real() -> None:
    """An entry fixed elsewhere must leave the list: it may not hide a later regression."""
    seen = {(i.module, i.target) for i in all_imports() if violation(i) is not None}
    assert set(KNOWN_VIOLATIONS) <= seen, set(KNOWN_VIOLATIONS) - seen
