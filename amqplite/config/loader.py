"""Load conf/amqplite.yaml into Config; a bad file gives ConfigError with file, line, key, value."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import attrs

from amqplite.config.models import (
    AlarmsConfig,
    ClusterConfig,
    ClusterListener,
    Config,
    Limits,
    Listener,
    LoggingConfig,
    ManagementConfig,
    QueueDefaults,
    StoreConfig,
    TlsConfig,
    UserConfig,
)
from amqplite.config.source import ConfigError, Path_, Source, read_yaml

__all__ = ["ConfigError", "build_config", "load_config"]

_MODELS: dict[str, type] = {
    "Config": Config,
    "Listener": Listener,
    "UserConfig": UserConfig,
    "Limits": Limits,
    "ManagementConfig": ManagementConfig,
    "QueueDefaults": QueueDefaults,
    "StoreConfig": StoreConfig,
    "LoggingConfig": LoggingConfig,
    "ClusterConfig": ClusterConfig,
    "ClusterListener": ClusterListener,
    "TlsConfig": TlsConfig,
    "AlarmsConfig": AlarmsConfig,
}


def _build(cls: type, data: Any, src: Source, path: Path_) -> Any:
    """Build an attrs model from a mapping, checking keys, value types and ranges."""
    if not isinstance(data, dict):
        raise src.error(path, f"a mapping of {cls.__name__} settings", data)
    hints = typing.get_type_hints(cls, localns=_MODELS)
    fields = {f.name: f for f in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        here = (*path, str(key))
        field = fields.get(str(key))
        if field is None:
            raise src.error(here, f"one of the settings {', '.join(fields)}", key)
        kwargs[field.name] = _convert(hints[field.name], value, src, here)
        _check_limits(field.metadata, kwargs[field.name], src, here)
    return cls(**kwargs)


def _check_limits(meta: Any, value: Any, src: Source, path: Path_) -> None:
    if value is None:
        return
    low, high, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    pattern = meta.get("pattern")
    if pattern is not None:
        for i, text in enumerate(value) if isinstance(value, tuple) else [(None, value)]:
            if not re.fullmatch(pattern, text):
                raise src.error(path if i is None else (*path, i), meta["meaning"], text)
    if choices is not None and value not in choices:
        raise src.error(path, f"one of {', '.join(choices)}", value)
    if low is not None and high is not None and not low <= value <= high:
        raise src.error(path, f"a number from {low} to {high}", value)
    if low is not None and value < low:
        raise src.error(path, f"a number >= {low}", value)
    if high is not None and value > high:
        raise src.error(path, f"a number <= {high}", value)


def _convert(hint: Any, value: Any, src: Source, path: Path_) -> Any:
    if isinstance(hint, types.UnionType):  # `int | None`: null (or nothing) keeps the default
        if value is None:
            return None
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    if attrs.has(hint):
        return _build(hint, value, src, path)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, str) and item is str:
            value = [value]  # `vhosts: /` reads as a one-item list
        if not isinstance(value, list):
            raise src.error(path, "a list", value)
        return tuple(_convert(item, v, src, (*path, i)) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise src.error(path, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise src.error(path, "an integer", value)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise src.error(path, "a number", value)
        return float(value)
    if hint is str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise src.error(path, "a string", value)
        return value
    return value


def build_config(src: Source) -> Config:
    """The Config of a parsed document (an empty document gives the defaults)."""
    if src.data is None:
        return Config()
    config = typing.cast(Config, _build(Config, src.data, src, ()))
    return _read_secret(config, src)


def _read_secret(config: Config, src: Source) -> Config:
    """cluster.secret_file's content becomes cluster.secret (setting both is an error)."""
    cluster = config.cluster
    if not cluster.secret_file:
        return config
    path = ("cluster", "secret_file")
    if cluster.secret:
        raise ConfigError(
            src.file, "cluster.secret_file", "set cluster.secret or it, not both", src.line_of(path)
        )
    try:
        secret = Path(cluster.secret_file).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(
            src.file,
            "cluster.secret_file",
            f"cannot read {cluster.secret_file}: {why}",
            src.line_of(path),
        ) from None
    if not secret:
        raise ConfigError(
            src.file, "cluster.secret_file", f"{cluster.secret_file} is empty", src.line_of(path)
        )
    return attrs.evolve(config, cluster=attrs.evolve(cluster, secret=secret))


def load_config(path: str | Path | None) -> Config:
    """Read a YAML config file (None gives the built-in defaults)."""
    if path is None:
        return Config()
    return build_config(read_yaml(path))
