"""The dependency rule, read from the code: cogs -> bot.adapter -> bot.core -> model.

Nothing imports upward; only the adapter and the cogs import discord; cogs call services,
never the store, the registry or model/ directly. (bot.experiment and bot.cli sit beside the
adapter: they use the core, and nothing in the core uses them.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(package: str) -> dict[str, set[str]]:
    """Module file -> the absolute module names it imports (anywhere in the file)."""
    out = {}
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        out[str(path.relative_to(ROOT))] = names
    return out


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{f}: {name}" for f, names in imports(package).items() for name in sorted(names)
            if any(name == p or name.startswith(p + ".") for p in forbidden)]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("model", ("bot", "cogs", "discord", "aiosqlite")),
    ("bot.core", ("bot.adapter", "bot.experiment", "bot.cli", "cogs", "discord")),
    ("bot.experiment", ("bot.adapter", "bot.cli", "cogs", "discord")),
    ("bot.adapter", ("cogs", "bot.cli", "bot.experiment")),
    ("cogs", ("bot.core.store", "bot.cli", "bot.experiment", "model")),
])
def test_nothing_imports_upward(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, forbidden) == []


def test_cogs_reach_the_core_only_through_services() -> None:
    """No cog touches the store or the model registry, even through the services object."""
    uses = [f"{path.name}: {attr}" for path in sorted((ROOT / "cogs").glob("*.py"))
            for attr in ("services.store", "services.registry") if attr in path.read_text()]
    assert uses == []
