"""docs/ARCHITECTURE.md's map of modules lists every module of amqplite, and the README links it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def mapped_modules() -> set[str]:
    """The module paths (relative to amqplite/) in the first column of the map's rows."""
    text = DOC.read_text()
    _, _, table = text.partition("## Map of modules")
    return set(re.findall(r"^\| `([\w/]+\.py)` \|", table, re.MULTILINE))


def test_every_module_is_in_the_map() -> None:
    modules = {
        path.relative_to(ROOT / "amqplite").as_posix()
        for path in (ROOT / "amqplite").rglob("*.py")
        if path.name != "__init__.py"
    }
    missing = sorted(modules - mapped_modules())
    assert not missing, f"add a row to the map of modules in docs/ARCHITECTURE.md: {missing}"


def test_the_map_is_read_from_its_table() -> None:
    assert {"protocol/frames.py", "server/committer.py", "store/records.py"} <= mapped_modules()


def test_readme_links_the_architecture() -> None:
    assert "(docs/ARCHITECTURE.md)" in (ROOT / "README.md").read_text()
