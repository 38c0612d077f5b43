"""The core imports no I/O: walk every module's imports (transitively, inside the package)."""

from __future__ import annotations

import ast
from pathlib import Path

import livecommerce.commerce

FORBIDDEN = {
    "asyncio", "starlette", "redis", "socket", "aiortc", "uvicorn", "websockets",
    "os", "pathlib", "io", "subprocess", "threading", "time", "shutil", "sqlite3",
}  # fmt: skip


def test_core_modules_import_no_io() -> None:
    package = Path(livecommerce.commerce.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "open":
                raise AssertionError(f"{path.name} opens a file")
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
                assert not name.startswith("livecommerce.") or name.startswith(
                    "livecommerce.commerce"
                ), f"{path.name} imports {name} from outside the core"
