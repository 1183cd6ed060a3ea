"""Plots for the HTML reports: matplotlib figures written as inline SVG (worker side).

Why matplotlib SVG rather than Vega-Lite (altair) or plotly: a report must open offline, years
later, in any browser or mail client, and be diffable. SVG needs no JavaScript (nothing can fail
to load or log an error at view time), is 20–60 KB a plot where plotly's bundle is 3.5 MB a
page, and matplotlib is the best-kept of the three. The price is no hover: every number a plot
shows is also in a table of the report.

Output is deterministic (fixed hash salt, no date), so a re-render of the same report is the
same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C", "#CCB974",
           "#64B5CD"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({
        "svg.hashsalt": "qeffbuild", "svg.fonttype": "none", "font.size": 10, "axes.spines.top": False,
        "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100,
    })
    return plt


def _svg(fig: Any, bottom: float = 0.0) -> str:
    plt = _plt()
    buf = io.StringIO()
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: drop the XML prolog and doctype


def _width(n: int) -> float:
    return min(8.0, max(6.0, 0.55 * n + 2.5))


def _xticks(ax: Any, positions: Sequence[float], labels: Sequence[str]) -> None:
    """Category labels, slanted when they are long or many, so they never overlap."""
    slant = len(labels) > 3 or max((len(x) for x in labels), default=0) > 14
    ax.set_xticks(list(positions), list(labels), rotation=20 if slant else 0, ha="right" if slant else "center",
                  fontsize=8)


def bars(labels: Sequence[str], values: Sequence[float | None], ylabel: str, *, log: bool = False,
         line: float | None = None, line_label: str = "", fmt: str = "{:.3g}") -> str:
    """One bar per label, each with its value written on it (missing values are shown as "n/a")."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(_width(len(labels)), 3.4))
    xs = range(len(labels))
    heights = [v if v is not None else 0.0 for v in values]
    if log:
        floor = min((v for v in heights if v > 0), default=1e-12) / 10
        heights = [max(v, floor) for v in heights]
        ax.set_yscale("log")
    ax.bar(xs, heights, color=[PALETTE[i % len(PALETTE)] for i in xs], width=0.6)
    for x, v, h in zip(xs, values, heights, strict=True):
        ax.annotate("n/a" if v is None else fmt.format(v), (x, h), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    if line is not None:
        ax.axhline(line, color="#333333", linestyle="--", linewidth=1, label=line_label)
        # above the axes, outside them: a legend inside covers a bar whatever corner it takes
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.2)
    if not log:
        ax.set_ylim(bottom=0)
    _xticks(ax, list(xs), labels)
    ax.set_ylabel(ylabel)
    return _svg(fig)


def dots(items: Sequence[str], series: Mapping[str, Sequence[float | None]], ylabel: str) -> str:
    """A value per item (utterance) for each series (runtime), side by side."""
    plt = _plt()
    n = max(1, len(series))
    ncol = min(3, n)
    legend_rows = (n + ncol - 1) // ncol
    fig, ax = plt.subplots(figsize=(7.0, 3.4 + 0.22 * legend_rows))
    for k, (name, values) in enumerate(series.items()):
        xs = [i + (k - (n - 1) / 2) * 0.8 / n for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        ax.scatter(xs, ys, s=18, color=PALETTE[k % len(PALETTE)], label=name, zorder=3)
    step = max(1, len(items) // 20)  # at most ~20 tick labels
    ax.set_xticks(range(0, len(items), step), [str(i + 1) for i in range(0, len(items), step)], fontsize=7)
    ax.set_xlabel("utterance (numbered as in the table below)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)  # an error rate from zero: the scale of a difference is visible
    if series:  # below the plot, so it hides no dot
        fig.legend(*ax.get_legend_handles_labels(), fontsize=7, ncol=ncol, loc="lower center", frameon=False)
    return _svg(fig, bottom=0.06 * legend_rows + 0.02 if series else 0.0)


def boxes(groups: Mapping[str, Sequence[float]], ylabel: str) -> str:
    """The distribution of each group's samples (latencies): box, whiskers and every sample as a dot."""
    plt = _plt()
    names = [k for k, v in groups.items() if v]
    fig, ax = plt.subplots(figsize=(_width(len(names)), 3.6))
    data = [list(groups[k]) for k in names]
    if data:
        ax.boxplot(data, widths=0.5, showfliers=False)
        for i, values in enumerate(data, 1):
            jitter = [(j % 5 - 2) * 0.04 for j in range(len(values))]
            ax.scatter([i + d for d in jitter], values, s=8, color=PALETTE[(i - 1) % len(PALETTE)], alpha=0.7,
                       zorder=3)
    _xticks(ax, range(1, len(names) + 1), names)
    ax.set_ylabel(ylabel)
    return _svg(fig)


def lines(series: Mapping[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str) -> str:
    """y against x for each series (throughput against batch size or sequence length)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for k, (name, points) in enumerate(series.items()):
        pts = sorted(points)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=PALETTE[k % len(PALETTE)], label=name)
    xs = sorted({p[0] for points in series.values() for p in points})
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.set_ylim(bottom=0)  # throughput from zero: a small gain must look small
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _svg(fig)
