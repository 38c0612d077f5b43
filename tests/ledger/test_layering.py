"""The ledger stands alone, and its core is sans-I/O (STYLE.md rule 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ledger"
CORE = ["block", "checkpoint", "entry", "merkle", "note", "receipt", "settings", "tiles", "wal"]
IO_MODULES = {"asyncio", "starlette", "uvicorn", "socket", "urllib", "os", "pathlib", "io"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_ledger_never_imports_the_server() -> None:
    for path in PACKAGE.rglob("*.py"):
        assert not any(n.split(".")[0] == "livecommerce" for n in _imports(path)), path


@pytest.mark.parametrize("module", CORE)
def test_core_module_does_no_io(module: str) -> None:
    imported = {n.split(".")[0] for n in _imports(PACKAGE / f"{module}.py")}
    assert not imported & IO_MODULES, imported & IO_MODULES
