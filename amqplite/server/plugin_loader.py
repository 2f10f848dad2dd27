"""Plugins by name: bundled ones in amqplite_plugins, third-party ones by entry point or module."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, Final

ENTRY_POINT_GROUP: Final = "amqplite.plugins"
"""The entry-point group a third-party distribution registers its plugins in (name = module)."""

BUNDLED_PACKAGE: Final = "amqplite_plugins"
"""The package, installed with amqplite, whose public modules are the bundled plugins."""


class UnknownPlugin(LookupError):
    """A plugin name that is neither bundled nor registered; names the known ones."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown plugin {name!r}; known plugins: {', '.join(known) or 'none'}")
        self.name = name
        self.known = known


class BadPlugin(ValueError):
    """A plugin found by name that cannot be imported or has no register() function."""


def known_plugins() -> dict[str, Callable[[], Any]]:
    """Every plugin name with its loader: bundled first, then entry points (not shadowing)."""
    import importlib.metadata  # ~20 ms of imports: only when a plugin is named
    import pkgutil

    found: dict[str, Callable[[], Any]] = {}
    bundled = importlib.import_module(BUNDLED_PACKAGE)
    for info in sorted(pkgutil.iter_modules(bundled.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name] = functools.partial(
                importlib.import_module, f"{BUNDLED_PACKAGE}.{info.name}"
            )
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.load)
    return found


def _module_exists(name: str) -> bool:
    """True when `name` is an importable module path (its parent packages are imported)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def load_plugin(name: str) -> Any:
    """The plugin called `name` (an object with register()); UnknownPlugin or BadPlugin if not.

    A dotted name that is not a known plugin is imported as a module path (a plugin not
    packaged as a distribution, importable from the broker's sys.path).
    """
    plugins = known_plugins()
    loader = plugins.get(name)
    if loader is None and "." in name and _module_exists(name):
        loader = functools.partial(importlib.import_module, name)
    if loader is None:
        raise UnknownPlugin(name, sorted(plugins))
    try:
        plugin = loader()
    except ImportError as exc:
        raise BadPlugin(f"plugin {name!r} cannot be imported: {exc}") from None
    if not callable(getattr(plugin, "register", None)):
        raise BadPlugin(f"plugin {name!r} has no register(registry) function")
    return plugin
