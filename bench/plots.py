"""PNG plots of the benchmark's results, drawn with matplotlib.

bench/run.sh installs matplotlib into bench/.venv and runs load.py with that interpreter.
"""

from __future__ import annotations

import os

from calls import BenchError
from phases import Summary

# One color per route, the same in both panels.
COLORS = ["tab:gray", "tab:blue", "tab:orange", "tab:green", "tab:red"]


def import_pyplot():
    """Return matplotlib.pyplot with the file-only Agg backend."""
    try:
        import matplotlib
    except ImportError as error:
        raise BenchError(
            "matplotlib is missing; run the benchmark through bench/run.sh, which installs it into bench/.venv, "
            "or pass --no-plots"
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save(figure, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    figure.savefig(path, dpi=120)
    print(f"wrote {path}", flush=True)


def plot_latency(series: dict[str, list[Summary]], caption: str, path: str) -> None:
    """Plot p50 and p99 latency (log scale) and throughput against concurrency, one line per
    route in `series`."""
    pyplot = import_pyplot()
    figure, (latency_axes, rate_axes) = pyplot.subplots(1, 2, figsize=(12, 5))
    for color, (name, summaries) in zip(COLORS, series.items()):
        points = sorted(summaries, key=lambda summary: summary.concurrency)
        levels = [summary.concurrency for summary in points]
        latency_axes.plot(levels, [summary.p50_us / 1000 for summary in points], "o-", color=color, label=f"{name} p50")
        latency_axes.plot(levels, [summary.p99_us / 1000 for summary in points], "s--", color=color, label=f"{name} p99")
        rate_axes.plot(levels, [summary.calls_per_second for summary in points], "o-", color=color, label=name)

    levels = sorted({summary.concurrency for summaries in series.values() for summary in summaries})
    for axes in (latency_axes, rate_axes):
        axes.set_xscale("log")
        axes.set_xticks(levels, [str(level) for level in levels])
        axes.minorticks_off()
        axes.set_xlabel("concurrent clients (keep-alive connections)")
        axes.grid(True, which="both", alpha=0.3)
    latency_axes.set_yscale("log")
    latency_axes.set_ylabel("latency (ms, log scale)")
    latency_axes.set_title("Latency against load: p50 (solid) and p99 (dashed)")
    latency_axes.legend(fontsize="small")
    rate_axes.set_ylim(bottom=0)
    rate_axes.set_ylabel("calls per second")
    rate_axes.set_title("Throughput against load")
    rate_axes.legend(fontsize="small")
    figure.suptitle(caption, fontsize="small")
    figure.tight_layout()
    save(figure, path)
    pyplot.close(figure)


def plot_scaling_panel(axes, summaries: list[Summary], size_label: str, color: str) -> None:
    points = sorted(summaries, key=lambda summary: summary.size or 0)
    sizes = [summary.size for summary in points]
    axes.plot(sizes, [summary.calls_per_second for summary in points], "o-", color=color, label="median of rounds")
    for summary in points:
        rates = [entry["calls"] / entry["seconds"] for entry in summary.rounds]
        axes.plot([summary.size] * len(rates), rates, "x", color=color, alpha=0.5)
    axes.plot([], [], "x", color=color, alpha=0.5, label="each round")
    axes.set_xscale("log")
    axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
    axes.minorticks_off()
    axes.set_ylim(bottom=0)
    axes.set_xlabel(f"{size_label} (log scale)")
    axes.set_ylabel("calls per second")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize="small")


def plot_scaling(rules: list[Summary], sessions: list[Summary], caption: str, path: str) -> None:
    """Plot REST throughput against the policy's rule count and the store's session count."""
    pyplot = import_pyplot()
    panels = [(summaries, label) for summaries, label in ((rules, "policy rules"), (sessions, "sessions in the store")) if summaries]
    figure, axes_list = pyplot.subplots(1, len(panels), figsize=(6 * len(panels), 5), squeeze=False)
    for axes, (summaries, label), color in zip(axes_list[0], panels, COLORS[1:]):
        plot_scaling_panel(axes, summaries, label, color)
        axes.set_title(f"REST throughput against {label}, concurrency {summaries[0].concurrency}")
    figure.suptitle(caption, fontsize="small")
    figure.tight_layout()
    save(figure, path)
    pyplot.close(figure)
