"""Plugins by name: bundled ones found in amqplite_plugins, third-party ones by entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from amqplite.broker.exchange_types import builtin_registry
from amqplite.cli.main import main
from amqplite.server.plugin_loader import (
    ENTRY_POINT_GROUP,
    BadPlugin,
    UnknownPlugin,
    known_plugins,
    load_plugin,
)

THIRD_PARTY = '''
"""A third-party plugin: one exchange type with a plain fanout-like router."""

from amqplite.broker.plugin_api import ExchangeTypeRegistry


class Router:
    def __init__(self):
        self.dests = set()

    def bind(self, destination, routing_key, arguments):
        self.dests.add(destination)

    def unbind(self, destination, routing_key, arguments):
        self.dests.discard(destination)

    def route(self, routing_key, headers):
        return list(self.dests)


class ThirdPartyType:
    name = "x-third-party"

    def validate(self, arguments):
        pass

    def validate_binding(self, routing_key, arguments):
        pass

    def create_router(self):
        return Router()

    def assert_args_equivalence(self, resource, current, received):
        pass


def register(registry: ExchangeTypeRegistry) -> None:
    registry.register(ThirdPartyType())
'''


def install_distribution(site: Path, module: str, source: str, entry_name: str) -> None:
    """Lay out an installed distribution in `site`: a module and its entry point."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_name} = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path that holds installed distributions for one test."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


def test_bundled_plugins_are_found_by_name() -> None:
    assert "consistent_hash" in known_plugins()
    registry = builtin_registry()
    load_plugin("consistent_hash").register(registry)
    assert "x-consistent-hash" in registry


def test_a_third_party_plugin_is_found_through_its_entry_point(site: Path) -> None:
    install_distribution(site, "thirdparty_plugin", THIRD_PARTY, "third_party")
    assert "third_party" in known_plugins()
    registry = builtin_registry()
    load_plugin("third_party").register(registry)
    assert "x-third-party" in registry
    sys.modules.pop("thirdparty_plugin", None)


def test_an_entry_point_cannot_shadow_a_bundled_plugin(site: Path) -> None:
    install_distribution(site, "shadow_plugin", THIRD_PARTY, "consistent_hash")
    assert load_plugin("consistent_hash").__name__ == "amqplite_plugins.consistent_hash"


def test_an_unknown_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(UnknownPlugin) as caught:
        load_plugin("no_such_plugin")
    assert "unknown plugin 'no_such_plugin'; known plugins: " in str(caught.value)
    assert "consistent_hash" in caught.value.known


def test_an_entry_point_without_register_is_refused(site: Path) -> None:
    install_distribution(site, "empty_plugin", "X = 1\n", "empty")
    with pytest.raises(BadPlugin, match="plugin 'empty' has no register"):
        load_plugin("empty")
    sys.modules.pop("empty_plugin", None)


def test_serve_refuses_an_unknown_plugin_naming_file_key_and_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "amqplite.yaml"
    path.write_text("log_level: info\nplugins:\n  - consistent_hash\n  - plugins.consistent_hash\n")
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"amqplite: configuration error: {path}:4: plugins[1]: "
        "unknown plugin 'plugins.consistent_hash'; known plugins: "
    )
    assert "consistent_hash" in err[0].rpartition("known plugins: ")[2]
