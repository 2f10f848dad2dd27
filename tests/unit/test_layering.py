"""The import rules of DESIGN.md, checked with ast: pure layers do no I/O, protocol stands alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "amqplite"
PURE_LAYERS = ("protocol", "broker", "session", "store", "config")


def imported_modules(path: Path) -> set[str]:
    """Top-level module names imported by a source file (relative imports excluded)."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def files_of(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_import_no_trio_or_h11(layer: str) -> None:
    for path in files_of(layer):
        for name in imported_modules(path):
            assert name.split(".")[0] not in {"trio", "h11", "socket", "asyncio"}, f"{path}: {name}"


def test_protocol_imports_nothing_else_of_amqplite() -> None:
    for path in files_of("protocol"):
        for name in imported_modules(path):
            if name.startswith("amqplite"):
                assert name.startswith("amqplite.protocol"), f"{path}: {name}"


def test_pamqp_only_behind_protocol_methods_and_properties() -> None:
    allowed = {PACKAGE / "protocol" / "methods.py", PACKAGE / "protocol" / "properties.py"}
    for path in PACKAGE.rglob("*.py"):
        if path in allowed:
            continue
        for name in imported_modules(path):
            assert not name.startswith("pamqp"), f"{path}: {name}"


def test_broker_does_not_import_session_or_server() -> None:
    for path in files_of("broker"):
        for name in imported_modules(path):
            assert not name.startswith(("amqplite.session", "amqplite.server", "amqplite.cli")), (
                f"{path}: {name}"
            )


def test_store_imports_no_layer_above_it() -> None:
    """The store returns values; boot applies them (relative and TYPE_CHECKING imports count)."""
    above = ("broker", "session", "server", "management", "cluster", "cli", "plugins")
    for path in files_of("store"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against amqplite/store/...
                    base = ["amqplite", *path.relative_to(PACKAGE.parent).parts[1:-1]]
                    base = base[: len(base) - (node.level - 1)]
                    names = [".".join([*base, *([node.module] if node.module else [])])]
                else:
                    names = [node.module or ""]
            else:
                continue
            for name in names:
                parts = name.split(".")
                assert not (parts[0] == "amqplite" and len(parts) > 1 and parts[1] in above), (
                    f"{path}:{node.lineno}: {name}"
                )
