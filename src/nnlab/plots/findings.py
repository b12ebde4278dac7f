"""A claim's figure: each group's per-seed values, their mean and 95% interval, and what the
claim compares them with (a threshold, the notebook's number, or zero)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure


def interval_figure(
    labels: Sequence[str],
    values: Sequence[Sequence[float]],
    intervals: Sequence[tuple[float, float, float]],
    references: Sequence[float | None],
    ylabel: str,
    title: str,
) -> Figure:
    """One column per group: its seeds as dots, the mean and 95% interval (mean, low, high) as
    a bar, and its reference as a red dash (a NaN interval, from one seed, draws no bar)."""
    figure = Figure(figsize=(max(6.5, 1.4 * len(labels) + 2), 4.2))
    ax = figure.add_subplot()
    for x, (points, (mean, low, high), reference) in enumerate(
        zip(values, intervals, references, strict=True)
    ):
        offsets = [x + 0.12 * ((i % 5) - 2) / 2 for i in range(len(points))]
        ax.scatter(offsets, points, s=14, color="0.55", zorder=2)
        if math.isfinite(mean):
            ax.plot([x - 0.2, x + 0.2], [mean, mean], color="C0", linewidth=2, zorder=3)
        if math.isfinite(low) and math.isfinite(high):
            ax.errorbar(
                x, mean, yerr=[[mean - low], [high - mean]], color="C0", capsize=6, zorder=3
            )
        if reference is not None:
            ax.plot([x - 0.35, x + 0.35], [reference, reference], "--", color="C3", zorder=1)
    ax.set_xticks(range(len(labels)), [_wrapped(label) for label in labels], fontsize=8)
    ax.set(ylabel=ylabel, title=title)
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    return figure


def _wrapped(label: str, width: int = 22) -> str:
    """Each long line of a label on two, split at a comma or a space."""
    if "\n" in label:
        return "\n".join(_wrapped(line, width) for line in label.split("\n"))
    if len(label) <= width:
        return label
    cut = max(label.rfind(",", 0, width), label.rfind(" ", 0, width))
    return label if cut <= 0 else f"{label[: cut + 1]}\n{label[cut + 1 :]}"
