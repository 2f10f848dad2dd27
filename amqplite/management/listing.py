"""RabbitMQ's list parameters: pagination, name filter, sort and `columns=` selection."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from amqplite.management.http import HttpError

T = TypeVar("T")

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100


def _flag(query: Mapping[str, str], name: str) -> bool:
    return query.get(name, "false").lower() in ("true", "1", "yes")


def _int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer, got {raw!r}") from None


def lookup(item: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path (`message_stats.publish`), or None."""
    value: Any = item
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def select_columns(item: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    """Keep only the named (dotted) fields, nested as in the original."""
    out: dict[str, Any] = {}
    for column in columns:
        parts = column.split(".")
        value: Any = item
        for part in parts:
            if not isinstance(value, dict | Mapping) or part not in value:
                break
            value = value[part]
        else:
            target = out
            for part in parts[:-1]:
                target = target.setdefault(part, {})
            target[parts[-1]] = value
    return out


def _sort_key(path: str) -> Callable[[Mapping[str, Any]], tuple[int, Any]]:
    def key(item: Mapping[str, Any]) -> tuple[int, Any]:
        value = lookup(item, path)
        if value is None:
            return (0, 0)
        if isinstance(value, bool | int | float):
            return (1, value)
        return (2, str(value))

    return key


def render_list(
    objects: Iterable[T],
    name_of: Callable[[T], str],
    render: Callable[[T], dict[str, Any]],
    query: Mapping[str, str],
    fields: Callable[[T, Iterable[str]], Mapping[str, Any]] | None = None,
) -> Any:
    """Render a collection as RabbitMQ does: a plain list, or a page object with `page=`.

    `fields(obj, names)`, when given, renders only the named top-level fields: sorting then
    reads just the sort field of every object, and `columns=` renders just those columns.
    """
    items = list(objects)
    total = len(items)
    paginate = "page" in query or _flag(query, "pagination")
    name_filter = query.get("name", "")
    if name_filter:
        if _flag(query, "use_regex"):
            try:
                pattern = re.compile(name_filter)
            except re.error as exc:
                raise HttpError(400, f"invalid regex in name: {exc}") from None
            items = [o for o in items if pattern.search(name_of(o))]
        else:
            needle = name_filter.lower()
            items = [o for o in items if needle in name_of(o).lower()]
    filtered = len(items)
    sort = query.get("sort", "")
    reverse = _flag(query, "sort_reverse")
    page = page_size = page_count = 0
    if paginate:
        page = _int(query, "page", 1)
        page_size = _int(query, "page_size", DEFAULT_PAGE_SIZE)
        if page_size < 1 or page_size > MAX_PAGE_SIZE:
            raise HttpError(400, f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        page_count = max(1, math.ceil(len(items) / page_size))
        if page < 1 or page > page_count:
            raise HttpError(400, f"page out of range: {page} of {page_count}")
    partial = fields is not None
    if fields is None:
        render = _once(render)  # sorting and the page then share one rendering per object
        fields = _whole(render)
    if sort in ("", "name"):
        items.sort(key=name_of, reverse=reverse)  # no rendering: page first, render what is shown
    else:
        top, key = (sort.split(".")[0],), _sort_key(sort)
        items.sort(key=lambda o: key(fields(o, top)), reverse=reverse)
    if paginate:
        items = items[(page - 1) * page_size : page * page_size]
    columns = [c for c in query.get("columns", "").split(",") if c]
    if columns:
        tops = tuple(dict.fromkeys(c.split(".")[0] for c in columns))
        if partial and list(tops) == columns:  # top-level columns only: that is the row
            rendered = [dict(fields(o, tops)) for o in items]
        else:
            rendered = [select_columns(fields(o, tops), columns) for o in items]
    else:
        rendered = [render(o) for o in items]
    if not paginate:
        return rendered
    return {
        "filtered_count": filtered,
        "item_count": len(rendered),
        "items": rendered,
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    }


def _once(render: Callable[[T], dict[str, Any]]) -> Callable[[T], dict[str, Any]]:
    done: dict[int, dict[str, Any]] = {}

    def cached(obj: T) -> dict[str, Any]:
        item = done.get(id(obj))
        if item is None:
            item = done[id(obj)] = render(obj)
        return item

    return cached


def _whole(render: Callable[[T], dict[str, Any]]) -> Callable[[T, Iterable[str]], dict[str, Any]]:
    return lambda obj, _names: render(obj)
