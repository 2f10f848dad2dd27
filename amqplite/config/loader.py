"""Load conf/amqplite.yaml into Config; a bad file gives ConfigError naming file, key and expectation."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import attrs
import yaml

from amqplite.config.models import (
    Config,
    Limits,
    Listener,
    ManagementConfig,
    QueueDefaults,
    StoreConfig,
    UserConfig,
)


class ConfigError(Exception):
    """A configuration problem: which file, which key, what was found and what was expected."""

    def __init__(self, file: str, key: str, message: str, line: int | None = None) -> None:
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {key}: {message}")
        self.file = file
        self.key = key
        self.line = line


_MODELS: dict[str, type] = {
    "Config": Config,
    "Listener": Listener,
    "UserConfig": UserConfig,
    "Limits": Limits,
    "ManagementConfig": ManagementConfig,
    "QueueDefaults": QueueDefaults,
    "StoreConfig": StoreConfig,
}


def _build(cls: type, data: Any, file: str, prefix: str) -> Any:
    """Build an attrs model from a mapping, checking keys and value types."""
    if not isinstance(data, dict):
        raise ConfigError(file, prefix or "(top level)", f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, localns=_MODELS)
    names = {f.name for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(file, path, f"unknown setting; expected one of {sorted(names)}")
        kwargs[key] = _convert(hints[key], value, file, path)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, file: str, path: str) -> Any:
    origin = typing.get_origin(hint)
    if attrs.has(hint):
        return _build(hint, value, file, path)
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, list):
            raise ConfigError(file, path, f"expected a list, got {value!r}")
        return tuple(_convert(item, v, file, f"{path}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(file, path, f"expected a string, got {value!r}")
        return value
    return value


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config file (None or a missing default gives the built-in defaults)."""
    if path is None:
        return Config()
    file = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(file, "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(
            file,
            "(syntax)",
            f"not valid YAML: {getattr(exc, 'problem', exc)}",
            line=mark.line + 1 if mark else None,
        ) from None
    if data is None:
        return Config()
    return typing.cast(Config, _build(Config, data, file, ""))
