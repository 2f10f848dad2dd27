"""The results table, the ratios against a reference broker, and the JSON document."""

from __future__ import annotations

from typing import Any

import attrs

from benchlib.scenarios import METRICS, Result


def ratios(results: list[Result], subject: str, reference: str) -> dict[str, dict[str, float]]:
    """subject / reference for every metric both brokers reported, per scenario."""
    by_key = {(r.scenario, r.broker): r for r in results}
    out: dict[str, dict[str, float]] = {}
    for result in results:
        if result.broker != subject:
            continue
        other = by_key.get((result.scenario, reference))
        if other is None:
            continue
        for name, value in result.metrics.items():
            meta = METRICS.get(name)
            ref = other.metrics.get(name)
            if meta is None or not meta.ratio or not ref:
                continue
            out.setdefault(result.scenario, {})[name] = value / ref
    return out


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(results: list[Result], brokers: list[str]) -> str:
    """A plain-text table: one row per scenario and metric, one column per broker, and ratios."""
    compare = len(brokers) > 1
    by_key = {(r.scenario, r.broker): r for r in results}
    rows: list[list[str]] = []
    header = ["scenario", "metric", *brokers]
    if compare:
        header += [f"ratio {brokers[0].split()[0]}/{brokers[1].split()[0]}", "better?"]
    ratio_table = ratios(results, brokers[0], brokers[1]) if compare else {}
    scenarios = list(dict.fromkeys(r.scenario for r in results))
    for scenario in scenarios:
        first = True
        errors = [
            f"{b}: {by_key[(scenario, b)].error}"
            for b in brokers
            if (scenario, b) in by_key and by_key[(scenario, b)].error
        ]
        names = [
            m
            for m in METRICS
            if any(m in by_key[(scenario, b)].metrics for b in brokers if (scenario, b) in by_key)
        ]
        for name in names:
            meta = METRICS[name]
            row = [scenario if first else "", f"{meta.label} ({meta.unit})"]
            first = False
            for broker in brokers:
                result = by_key.get((scenario, broker))
                row.append(_number(result.metrics.get(name) if result else None))
            if compare:
                ratio = ratio_table.get(scenario, {}).get(name)
                if ratio is None:
                    row += ["", ""]
                else:
                    good = ratio >= 1 if meta.higher_is_better else ratio <= 1
                    row += [f"{ratio:.2f}x", "yes" if good else "no"]
            rows.append(row)
        for error in errors:
            rows.append([scenario if first else "", "ERROR " + error.splitlines()[0][:90]])
            first = False
    widths = [max(len(r[i]) for r in [header, *rows] if i < len(r)) for i in range(len(header))]
    lines = []
    for i, row in enumerate([header, *rows]):
        cells = []
        for j, cell in enumerate(row):
            if j < 2 or i == 0:
                cells.append(cell.ljust(widths[j]) if j < len(widths) else cell)
            else:
                cells.append(cell.rjust(widths[j]))
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def document(
    results: list[Result], brokers: list[str], urls: list[str], settings: Any, command: str
) -> dict[str, Any]:
    """The JSON report: settings, brokers, every result, and ratios of the first broker."""
    doc: dict[str, Any] = {
        "command": command,
        "settings": attrs.asdict(settings),
        "brokers": [{"name": b, "url": u} for b, u in zip(brokers, urls, strict=True)],
        "results": [attrs.asdict(r) for r in results],
    }
    if len(brokers) > 1:
        doc["ratios"] = ratios(results, brokers[0], brokers[1])
    return doc
