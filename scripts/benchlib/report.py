"""The results table, the ratios against a reference broker, and the JSON document."""

from __future__ import annotations

from typing import Any, Final

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


FLOW_LABELS: Final = {
    "transient": "transient, one queue, ack multiple",
    "manual-ack": "one ack per message",
    "fanout": "fanout to 10 queues (deliveries)",
    "topic": "topic, 1,000 bindings over 10 queues",
    "confirms": "confirmed persistent, durable queue",
}


def _rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}"


def _short(broker: str) -> str:
    return broker.split()[0]


def flow_table(results: list[Result], brokers: list[str]) -> str:
    """The side-by-side table of issue 16: accepted / delivered, delivered ratio, CPU/delivery."""
    by_key = {(r.scenario, r.broker): r for r in results}
    subject, reference = brokers[0], brokers[1]
    a, b = _short(subject), _short(reference)
    lines = [
        f"| scenario | {a} accepted / delivered per s | {b} accepted / delivered per s "
        f"| delivered ratio | broker CPU µs per delivery, {a} / {b} |",
        "|---|---|---|---|---|",
    ]
    for scenario in dict.fromkeys(r.scenario for r in results):
        pair = [by_key.get((scenario, broker)) for broker in (subject, reference)]
        if any(r is None or "delivered_per_s" not in r.metrics for r in pair):
            continue
        cells = []
        for result in pair:
            assert result is not None
            m = result.metrics
            text = f"{_rate(m.get('accepted_per_s'))} / {_rate(m.get('delivered_per_s'))}"
            cells.append(text + (" (FAILED)" if result.error else ""))
        mine, theirs = (r.metrics if r else {} for r in pair)
        ratio = mine["delivered_per_s"] / theirs["delivered_per_s"]
        cpu = " / ".join(_number(m.get("cpu_us_per_msg")) for m in (mine, theirs))
        label = FLOW_LABELS.get(scenario, scenario)
        lines.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio:.2f}x | {cpu} |")
    return "\n".join(lines)


def memory_table(results: list[Result], brokers: list[str]) -> str:
    """Per flow and broker: RSS start / peak / end, peak queue depth, drain time after the window."""
    lines = [
        "| scenario | broker | RSS start / peak / end MB | queue depth peak | drain after window s |",
        "|---|---|---|---|---|",
    ]
    by_key = {(r.scenario, r.broker): r for r in results}
    for scenario in dict.fromkeys(r.scenario for r in results):
        for broker in brokers:
            result = by_key.get((scenario, broker))
            if result is None or "rss_start_mb" not in result.metrics:
                continue
            m = result.metrics
            rss = " / ".join(f"{m[k]:.0f}" for k in ("rss_start_mb", "rss_peak_mb", "rss_end_mb"))
            depth = f"{m['depth_peak']:,.0f}" if "depth_peak" in m else "-"
            drain = f"{m['drain_s']:.1f}" if "drain_s" in m else "-"
            lines.append(f"| {scenario} | {_short(broker)} | {rss} | {depth} | {drain} |")
    return "\n".join(lines)
