"""YAML sources with line numbers, and ConfigError: the file, line, key, bad value and expectation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

_MISSING = object()

# libyaml's parser when PyYAML has it: the pure-Python one takes ~20 ms on the sample config at start
_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def show_path(path: Path_) -> str:
    """A key path as an operator writes it: limits.heartbeat, users[0].name."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def show_value(value: Any) -> str:
    """A bad value as YAML would spell it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (empty)"
    if isinstance(value, dict | list):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return repr(value)


class ConfigError(Exception):
    """A configuration problem: which file and line, which key, the bad value, what was expected."""

    def __init__(
        self,
        file: str,
        key: str,
        message: str,
        line: int | None = None,
        *,
        value: Any = _MISSING,
    ) -> None:
        where = f"{file}:{line}" if line else file
        got = "" if value is _MISSING else f"got {show_value(value)}, "
        super().__init__(f"{where}: {key}: {got}{message}")
        self.file = file
        self.key = key
        self.line = line
        self.message = message
        self.value = None if value is _MISSING else value


class Source:
    """A parsed YAML (or JSON) document plus the line of every key, for error messages."""

    def __init__(self, file: str, data: Any, lines: dict[Path_, int] | None = None) -> None:
        self.file = file
        self.data = data
        self.lines = lines or {}

    def line_of(self, path: Path_) -> int | None:
        """The line of the key at `path`, or of its nearest enclosing key that has one."""
        while path:
            line = self.lines.get(path)
            if line is not None:
                return line
            path = path[:-1]
        return None

    def error(self, path: Path_, expected: str, value: Any = _MISSING) -> ConfigError:
        """A ConfigError at `path` (with its line): got `value`, expected `expected`."""
        return ConfigError(
            self.file, show_path(path), f"expected {expected}", self.line_of(path), value=value
        )


def _index_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key: str | int = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            lines[(*path, key)] = key_node.start_mark.line + 1
            _index_lines(value_node, (*path, key), lines)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, (*path, i), lines)


def parse_yaml(text: str, file: str) -> Source:
    """Parse YAML text safely; a syntax error becomes a ConfigError with its line."""
    loader = _SafeLoader(text)
    try:  # one pass: the node tree gives the lines, and the data is constructed from it
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            file,
            "(syntax)",
            f"not valid YAML: {problem}",
            line=mark.line + 1 if mark is not None else None,
        ) from None
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    if node is not None:
        _index_lines(node, (), lines)
        lines.pop((), None)
    return Source(file, data, lines)


def read_yaml(path: str | Path) -> Source:
    """Read and parse a YAML file; an unreadable file is a ConfigError too."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "(file)", f"not UTF-8 text: {exc.reason}") from None
    return parse_yaml(text, file)


class ListenError(Exception):
    """A listener could not be opened: its address, the flag and key that set it, and why."""

    def __init__(self, what: str, host: str, port: int, setting: str, reason: str) -> None:
        super().__init__(f"cannot listen on {host}:{port} for {what} ({setting}): {reason}")
        self.port = port
