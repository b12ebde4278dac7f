"""Figures of the image tasks: confusion, mistakes, robustness, reconstructions and search."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure


def confusion_matrix(counts: np.ndarray, classes: Sequence[str]) -> Figure:
    """Test images by true class (rows) and predicted class (columns), counts written in; each
    row's label carries that class's accuracy (the diagonal's share)."""
    figure = Figure(figsize=(7.5, 6.5))
    ax = figure.add_subplot()
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(counts):
        colour = "white" if shares[row, column] > 0.5 else "black"
        ax.text(column, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes, rotation=45, ha="right", fontsize=8)
    accuracy = np.diag(shares)
    ax.set_yticks(
        ticks, [f"{c} ({a:.2f})" for c, a in zip(classes, accuracy, strict=True)], fontsize=8
    )
    ax.set(
        xlabel="predicted",
        ylabel="true (accuracy)",
        title="Confusion matrix (colour: share of the true class)",
    )
    figure.colorbar(image, ax=ax, shrink=0.8)
    figure.tight_layout()
    return figure


def image_grid(images: np.ndarray, titles: Sequence[str], title: str, columns: int = 8) -> Figure:
    """(n, h, w) images in [0, 1], each with its own caption."""
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(1.5 * columns, 1.7 * rows + 0.5))
    for index, (image, caption) in enumerate(zip(images, titles, strict=True)):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.imshow(image, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(caption, fontsize=7)
        ax.axis("off")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def robustness(rows: Sequence[dict], clean_accuracy: float) -> Figure:
    """Test accuracy against the strength of each perturbation, one panel per kind."""
    kinds = list(dict.fromkeys(row["perturbation"] for row in rows))
    figure = Figure(figsize=(4 * len(kinds), 3.5))
    for panel, kind in enumerate(kinds, start=1):
        ax = figure.add_subplot(1, len(kinds), panel)
        chosen = [row for row in rows if row["perturbation"] == kind]
        strengths = [0.0] + [row["strength"] for row in chosen]
        accuracies = [clean_accuracy] + [row["accuracy"] for row in chosen]
        ax.plot(strengths, accuracies, marker="o")
        ax.set(xlabel=f"{kind} ({chosen[0]['unit']})", ylabel="test accuracy", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    figure.suptitle("Test accuracy of perturbed images")
    figure.tight_layout()
    return figure
