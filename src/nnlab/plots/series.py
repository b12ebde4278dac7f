"""Figures of the series task: the split, the one-step predictions, the free-running forecast."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

REGION_COLOURS = {"train": "tab:blue", "val": "tab:orange", "test": "tab:green"}


def forecast(
    series: np.ndarray,
    ranges: dict[str, tuple[int, int]],
    one_step: dict[str, tuple[np.ndarray, np.ndarray]],
    rollout: tuple[np.ndarray, np.ndarray],
) -> Figure:
    """The series over shaded train/val/test ranges; one-step predictions (true inputs) on val
    and test; the free-running forecast (its own predictions as inputs) over test."""
    figure = Figure(figsize=(11, 4.5))
    ax = figure.add_subplot()
    for split, (first, end) in ranges.items():
        ax.axvspan(first, end, color=REGION_COLOURS[split], alpha=0.08, label=f"{split} range")
    ax.plot(np.arange(len(series)), series, color="black", linewidth=0.8, label="series")
    for index, (at, values) in enumerate(one_step.values()):
        ax.plot(
            at,
            values,
            color="tab:red",
            linewidth=1,
            label="one-step prediction" if index == 0 else None,
        )
    if len(rollout[0]):
        ax.plot(
            *rollout,
            color="tab:purple",
            linewidth=1.5,
            linestyle="--",
            label="free-running forecast",
        )
    ax.set(
        xlabel="t",
        ylabel="value",
        title="Forecasts: one step ahead, and free-running over the test range",
    )
    ax.legend(loc="upper left", fontsize="small", framealpha=0.8)
    return figure
