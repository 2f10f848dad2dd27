"""`--plot FILE.png`: accepted and delivered rates, queue depth and RSS over time, per broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchlib.sampler import rates
from benchlib.scenarios import Result


def plot_paths(path: Path, scenarios: list[str]) -> dict[str, Path]:
    """One image per scenario: ``path`` itself for one, ``stem-scenario.png`` beside it for more."""
    if len(scenarios) == 1:
        return {scenarios[0]: path}
    return {
        name: path.with_name(f"{path.stem}-{name}{path.suffix or '.png'}") for name in scenarios
    }


def plot(results: list[Result], brokers: list[str], path: Path) -> list[Path]:
    """Draw each scenario that has time series; the brokers side by side; return the files."""
    try:
        import matplotlib
    except ImportError as exc:
        raise SystemExit(
            "bench: --plot needs matplotlib (pip install -e '.[bench]' or '.[test]')"
        ) from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {(r.scenario, r.broker): r for r in results}
    scenarios = [
        s for s in dict.fromkeys(r.scenario for r in results) if _has_series(by_key, s, brokers)
    ]
    written = []
    for scenario, out in plot_paths(path, scenarios).items():
        columns = len(brokers)
        fig, axes = plt.subplots(
            3, columns, figsize=(6 * columns, 9), sharey="row", squeeze=False, sharex="col"
        )
        for col, broker in enumerate(brokers):
            result = by_key.get((scenario, broker))
            series = result.series if result is not None else None
            _draw(axes[:, col], broker, series)
        fig.suptitle(f"{scenario}: accepted vs delivered, queue depth, broker RSS")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        written.append(out)
    return written


def _has_series(by_key: dict[tuple[str, str], Result], scenario: str, brokers: list[str]) -> bool:
    return any(
        (scenario, b) in by_key and by_key[(scenario, b)].series is not None for b in brokers
    )


def _draw(axes: Any, broker: str, series: dict[str, Any] | None) -> None:
    rate_ax, depth_ax, rss_ax = axes
    rate_ax.set_title(broker)
    rate_ax.set_ylabel("msg/s")
    depth_ax.set_ylabel("ready messages")
    rss_ax.set_ylabel("broker RSS (MB)")
    rss_ax.set_xlabel("seconds")
    if series is None:
        rate_ax.text(0.5, 0.5, "no data", transform=rate_ax.transAxes, ha="center")
        return
    t = series["t"]
    x, accepted = rates(t, series["accepted"])
    rate_ax.plot(x, accepted, label="accepted (messages)")
    x, delivered = rates(t, series["delivered"])
    rate_ax.plot(x, delivered, label="delivered (deliveries)")
    rate_ax.legend(loc="upper right", fontsize="small")
    depth_ax.plot(series["depth_t"], series["depth"], color="tab:red")
    if series["rss_mb"]:
        rss_ax.plot(t[: len(series["rss_mb"])], series["rss_mb"], color="tab:purple")
    end = series.get("window_end")
    if end is not None:
        for ax in axes:
            ax.axvline(end, color="grey", linestyle=":", linewidth=1)
    for ax in axes:
        ax.grid(True, alpha=0.3)
