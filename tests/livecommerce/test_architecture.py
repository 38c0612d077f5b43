"""The layout's rules (docs/architecture.md): which folder of livecommerce may import
which. Every import of every module is read, those inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import livecommerce

PACKAGE = Path(livecommerce.__file__).parent
# What each folder (or module) may import from the rest of livecommerce, besides itself.
# Modules not named here are the ones that assemble the server (app, wiring, server,
# __main__, demo, metrics, audit): they may import anything.
ALLOWED: dict[str, set[str]] = {
    "commerce": set(),
    "protocol": set(),
    "payments": set(),
    "clock": set(),
    "keyfiles": set(),
    "stopping": set(),
    "gc_pauses": set(),
    "slow_headers": set(),
    "settings": {"commerce"},
    "redis_keys": {"commerce"},
    "stock": {"commerce"},
    "hub": {"protocol", "stopping"},
    "clients": {"commerce", "protocol", "clock", "keyfiles"},
    "pipeline": {
        "commerce", "stock", "payments", "protocol", "redis_keys", "clock", "stopping",
    },
    "writer": {
        "commerce", "stock", "payments", "protocol", "redis_keys", "clock", "stopping",
        "pipeline", "hub", "settings", "gc_pauses", "keyfiles", "__version__",
    },
    "api": {
        "commerce", "hub", "pipeline", "payments", "protocol", "clock", "__version__",
    },
}  # fmt: skip


def imports_of(path: Path) -> set[str]:
    """The first part below `livecommerce` of every livecommerce import in a module."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            if node.module == "livecommerce":
                names = [f"livecommerce.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(n.split(".")[1] for n in names if n.startswith("livecommerce."))
    return found


def test_every_folder_imports_only_what_its_rules_allow() -> None:
    broken = []
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        where = parts[0].removesuffix(".py")
        if where not in ALLOWED:
            continue
        checked += 1
        for target in imports_of(path) - {where} - ALLOWED[where]:
            broken.append(f"{path.relative_to(PACKAGE)} imports livecommerce.{target}")
    assert checked > 40
    assert broken == [], "\n".join(broken)


def test_the_rules_would_catch_an_upward_import(tmp_path: Path) -> None:
    upward = tmp_path / "room.py"
    upward.write_text("from livecommerce.pipeline.pipeline import OrderPipeline\n")
    assert imports_of(upward) - ALLOWED["hub"] == {"pipeline"}
