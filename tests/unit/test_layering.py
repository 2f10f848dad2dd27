"""DESIGN.md's layers, checked with ast on every import: relative, TYPE_CHECKING and local ones too.

cli -> server -> management / cluster -> session -> broker -> protocol; store sits beside broker
(the broker reaches it only through broker/durability.py's protocols, and it imports nothing above
it); config imports nothing. Plugins see amqplite.broker.plugin_api only. No module imports a
`_private` name of another module: it offers a public seam instead.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "amqplite"
PLUGINS = ROOT / "amqplite_plugins"

# layer -> the layers it may import (besides itself). "root" is amqplite/__init__.py (__version__).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "root": frozenset(),
    "config": frozenset(),
    "protocol": frozenset(),
    "store": frozenset({"root", "protocol", "config"}),
    "broker": frozenset({"root", "protocol", "config"}),
    "session": frozenset({"root", "broker", "protocol", "config"}),
    "cluster": frozenset({"root", "session", "broker", "store", "protocol", "config"}),
    "management": frozenset({"root", "session", "broker", "store", "protocol", "config"}),
    "server": frozenset(
        {"root", "management", "cluster", "session", "broker", "store", "protocol", "config"}
    ),
    "cli": frozenset(
        {"root", "server", "management", "cluster", "session", "broker", "store"}
        | {"protocol", "config"}
    ),
}
PURE_LAYERS = ("protocol", "broker", "session", "store", "config")
IO_MODULES = frozenset({"trio", "h11", "httpx", "socket", "asyncio", "selectors"})
PLUGIN_API = "amqplite.broker.plugin_api"
PAMQP_SEAMS = frozenset({"amqplite.protocol.methods", "amqplite.protocol.properties"})
# Layers where no module imports one that imports it back (TYPE_CHECKING imports included).
ACYCLIC_LAYERS = (
    "protocol",
    "config",
    "broker",
    "store",
    "session",
    "management",
    "server",
    "cli",
)

# Violations other branches are removing. Each must still exist (so the list shrinks to empty):
# "<layer> -> <layer>" for an edge against the arrows, "<module> imports <module>.<_name>" for a
# private name imported across modules.
KNOWN_VIOLATIONS: frozenset[str] = frozenset()


class Import(NamedTuple):
    """One imported module (and the name taken from it, if any) at a line of a module."""

    importer: str
    line: int
    module: str
    name: str | None


def module_name(path: Path) -> str:
    """The dotted name of a source file: amqplite/server/node.py -> amqplite.server.node."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> list[Path]:
    """Every module of amqplite and every plugin."""
    return sorted(PACKAGE.rglob("*.py")) + sorted(PLUGINS.rglob("*.py"))


def known_modules() -> set[str]:
    """Dotted names of every module and package in the tree."""
    return {module_name(path) for path in source_files()}


def imports_of(source: str, importer: str, is_package: bool, modules: set[str]) -> list[Import]:
    """Every import in the source, wherever it stands, relative ones resolved to absolute names."""
    package = importer if is_package else importer.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(Import(importer, node.lineno, a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if submodule in modules:  # `from amqplite.session import basic`
                    found.append(Import(importer, node.lineno, submodule, None))
                else:
                    found.append(Import(importer, node.lineno, base, alias.name))
    return found


@functools.cache
def all_imports() -> tuple[tuple[Path, Import], ...]:
    """(file, import) over the whole tree."""
    modules = known_modules()
    return tuple(
        (path, found)
        for path in source_files()
        for found in imports_of(
            path.read_text(), module_name(path), path.name == "__init__.py", modules
        )
    )


def layer_of(module: str) -> str | None:
    """The layer of an amqplite module or plugin; None for other libraries."""
    parts = module.split(".")
    if parts[0] == "amqplite_plugins":
        return "plugins"
    if parts[0] != "amqplite":
        return None
    if len(parts) == 1:
        return "root"
    if parts[1] == "__main__":
        return "cli"
    return parts[1]


def is_private(name: str) -> bool:
    """A leading-underscore name that is not a dunder (__version__ is public)."""
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def violations(pairs: Iterable[tuple[Path, Import]]) -> dict[str, list[str]]:
    """Each rule broken ("store -> broker", "a imports b._x") with the file:line places."""
    found: dict[str, list[str]] = {}
    for path, imp in pairs:
        place = f"{path.relative_to(ROOT)}:{imp.line}"
        source, target = layer_of(imp.importer), layer_of(imp.module)
        if source == "plugins":
            if target is not None and imp.module != PLUGIN_API:
                found.setdefault(f"plugins -> {imp.module}", []).append(place)
        elif source is not None and target not in {None, source, *MAY_IMPORT.get(source, ())}:
            found.setdefault(f"{source} -> {target}", []).append(place)
        if imp.name is not None and is_private(imp.name) and imp.module != imp.importer:
            found.setdefault(f"{imp.importer} imports {imp.module}.{imp.name}", []).append(place)
    return found


def describe(broken: dict[str, list[str]]) -> str:
    return "\n".join(f"{rule}: {', '.join(places)}" for rule, places in sorted(broken.items()))


def test_every_package_is_a_layer_of_the_design() -> None:
    layers = {layer_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    assert layers <= set(MAY_IMPORT), f"not in DESIGN.md's layers: {layers - set(MAY_IMPORT)}"


def test_imports_follow_the_layers_and_take_no_private_names() -> None:
    broken = violations(all_imports())
    new = {rule: places for rule, places in broken.items() if rule not in KNOWN_VIOLATIONS}
    assert not new, "imports against DESIGN.md's layers:\n" + describe(new)


def test_known_violations_still_exist() -> None:
    gone = KNOWN_VIOLATIONS - set(violations(all_imports()))
    assert not gone, f"fixed: remove from KNOWN_VIOLATIONS: {sorted(gone)}"


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_import_no_io(layer: str) -> None:
    for path, imp in all_imports():
        if layer_of(imp.importer) == layer:
            assert imp.module.split(".")[0] not in IO_MODULES, f"{path}:{imp.line}: {imp.module}"


def test_pamqp_only_behind_protocol_methods_and_properties() -> None:
    for path, imp in all_imports():
        if imp.module.split(".")[0] == "pamqp":
            assert imp.importer in PAMQP_SEAMS, f"{path}:{imp.line}: {imp.module}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph (module -> the modules it imports), or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph.get(module, ())):
            cycle = visit(imported, [*path, module])
            if cycle is not None:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle is not None:
            return cycle
    return None


def layer_graph(layer: str) -> dict[str, set[str]]:
    """Imports between modules of one layer (importer -> imported), TYPE_CHECKING ones included."""
    graph: dict[str, set[str]] = {}
    modules = known_modules()
    for _path, imp in all_imports():
        inside = layer_of(imp.importer) == layer == layer_of(imp.module)
        if inside and imp.module in modules and imp.module != imp.importer:
            graph.setdefault(imp.importer, set()).add(imp.module)
    return graph


@pytest.mark.parametrize("layer", ACYCLIC_LAYERS)
def test_no_import_cycles_inside_the_layer(layer: str) -> None:
    cycle = find_cycle(layer_graph(layer))  # no allowlist: a type-only cycle is a cycle too
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


# The checker itself, on small sources: each kind of import it must see.
MODULES = {"amqplite", "amqplite.server", "amqplite.server.node", "amqplite.broker.plugin_api"}


def check(source: str, importer: str = "amqplite.store.store") -> set[str]:
    pairs = [(ROOT, imp) for imp in imports_of(source, importer, False, MODULES)]
    return set(violations(pairs))


def test_checker_resolves_relative_imports() -> None:
    assert check("from ..broker import queue") == {"store -> broker"}
    assert check("from . import journal") == set()
    assert check("from ... import __version__", "amqplite.store.x.y") == set()
    assert check("from ...session import channel", "amqplite.store.x.y") == {"store -> session"}


def test_checker_sees_type_checking_and_local_imports() -> None:
    source = "if TYPE_CHECKING:\n    from amqplite.session.connection import Session\n"
    assert check(source) == {"store -> session"}
    assert check("def f():\n    import amqplite.server.node\n") == {"store -> server"}


def test_checker_refuses_private_names_across_modules() -> None:
    assert check("from amqplite.store.journal import _fsync") == {
        "amqplite.store.store imports amqplite.store.journal._fsync"
    }
    assert check("from .journal import fsync as _fsync") == set()  # a private alias is fine
    assert check("from amqplite import __version__") == set()


def test_checker_confines_plugins_to_the_plugin_api() -> None:
    importer = "amqplite_plugins.example"
    assert check("from amqplite.broker.plugin_api import Destination", importer) == set()
    assert check("from amqplite.broker import plugin_api", importer) == set()
    assert check("from amqplite.broker.queue import Queue", importer) == {
        "plugins -> amqplite.broker.queue"
    }


def test_cycle_finder_finds_a_type_checking_cycle() -> None:
    assert find_cycle({"app": {"routing"}, "resources": {"app", "routing"}}) is None
    assert find_cycle({"app": {"resources"}, "resources": {"app"}}) == ["app", "resources", "app"]


def test_checker_keeps_server_above_management() -> None:
    assert check("from amqplite.management.metrics import X", "amqplite.server.node") == set()
    assert check("from amqplite.server.node import Node", "amqplite.management.app") == {
        "management -> server"
    }
