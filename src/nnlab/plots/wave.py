"""Figures of the wave task: the fit, and the step function hidden in it."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def prediction(x: np.ndarray, y: np.ndarray, predicted: np.ndarray, split_at: float) -> Figure:
    """The data and the network's prediction, with the left/right boundary of the R² metrics."""
    figure = Figure(figsize=(9, 5))
    ax = figure.add_subplot()
    ax.plot(x, y, color="black", linewidth=1, label="data")
    ax.plot(x, predicted, color="tab:red", linewidth=1.5, label="prediction")
    ax.axvline(split_at, color="grey", linestyle=":", linewidth=1)
    ax.set(
        xlabel="x", ylabel="y", title="Prediction against data (left | right of the dotted line)"
    )
    ax.legend(framealpha=0.8)
    return figure


def binary_activations(
    x: np.ndarray, y: np.ndarray, predicted: np.ndarray, thresholded: np.ndarray
) -> Figure:
    """The prediction next to the one made with hidden activations rounded to 0 or 1.

    With each hidden node either off or on, the linear output layer adds a constant per node
    that is on, so the prediction becomes piecewise constant: each node's threshold
    -b/w is where one step begins.
    """
    figure = Figure(figsize=(9, 5))
    ax = figure.add_subplot()
    ax.plot(x, y, color="black", linewidth=1, label="data")
    ax.plot(x, predicted, color="tab:red", linewidth=1.5, label="prediction")
    ax.step(x, thresholded, where="mid", color="tab:blue", linewidth=1.5, label="activations > 0.5")
    ax.set(xlabel="x", ylabel="y", title="Binary hidden activations: a piecewise-constant fit")
    ax.legend(framealpha=0.8)
    return figure
