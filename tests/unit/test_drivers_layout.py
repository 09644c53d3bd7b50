"""The drivers' import structure: no cycles, no I/O library behind the scheduler's import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    """Every ``drivers.*`` module ``path`` imports, at the top or inside a function (the
    names of a lazy registry's string table count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "drivers"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("drivers")}
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.startswith("drivers.")):
            found.add(node.value)
    return found


def test_no_import_cycles_among_drivers() -> None:
    modules = {f"drivers.{p.stem}": p for p in (ROOT / "drivers").glob("*.py")
               if p.stem != "__init__"}
    graph = {name: _imports(path) & modules.keys() - {name} for name, path in modules.items()}
    assert "drivers.modbus" in graph["drivers.registry"]  # the lazy table is seen

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for nxt in graph[start]:
            if nxt == target or (nxt not in seen and reaches(nxt, target, seen | {nxt})):
                return True
        return False

    cycles = [name for name in graph if reaches(name, name, set())]
    assert cycles == []
    assert graph["drivers.base"] == set()  # the contract imports no driver


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT).stdout
    return {name.split(".")[0] for name in out.split()}


def test_scheduler_import_loads_no_modbus_or_serial_library() -> None:
    loaded = _loaded_after("import gateway.edge.scheduler, drivers, drivers.base")
    assert "gateway" in loaded
    assert not loaded & {"pymodbus", "serial", "serial_asyncio_fast"}


def test_serial_line_driver_does_not_load_pymodbus() -> None:
    loaded = _loaded_after("import drivers.serial_line")
    assert "serial_asyncio_fast" in loaded
    assert "pymodbus" not in loaded
