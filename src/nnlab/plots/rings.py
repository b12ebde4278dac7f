"""Figures of the rings task: what the classifier decides and how its hidden nodes see the plane."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

CLASS_COLOURS = ("tab:red", "tab:green")
MAX_LEGEND = 10  # matplotlib's cycle of colours: node 10's line has node 0's colour
# Panels of the 3-D view: as the notebook does, a few triples of the N nodes. Every triple of 8
# nodes (20 panels of C(8, 3) = 56) took 1.2 s a run to draw and save, 4 panels 0.2 s.
MAX_TRIPLES = 4


def _scatter_classes(ax, points: np.ndarray, labels: np.ndarray, **style) -> None:
    for label, colour in enumerate(CLASS_COLOURS):
        chosen = points[labels == label]
        ax.scatter(*chosen.T, s=6, color=colour, label=f"class {label}", **style)


def decision_boundary(
    points: np.ndarray,
    labels: np.ndarray,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    probability: np.ndarray,
) -> Figure:
    """The data over the predicted probability of class 1, with the 0.5 contour as the boundary.

    `grid_x`, `grid_y` and `probability` are (rows, cols) arrays from np.meshgrid.
    """
    figure = Figure(figsize=(6, 6))
    ax = figure.add_subplot()
    shading = ax.contourf(
        grid_x, grid_y, probability, levels=np.linspace(0, 1, 11), cmap="RdYlGn", alpha=0.35
    )
    ax.contour(grid_x, grid_y, probability, levels=[0.5], colors="black", linewidths=1.5)
    _scatter_classes(ax, points, labels)
    figure.colorbar(shading, ax=ax, label="P(class 1)", shrink=0.8)
    ax.set(xlabel="x", ylabel="y", title="Decision boundary (P = 0.5)", aspect="equal")
    ax.legend(loc="upper right", framealpha=0.8)
    return figure


def hidden_lines(
    points: np.ndarray, labels: np.ndarray, weights: np.ndarray, biases: np.ndarray
) -> Figure:
    """Each first-layer node's line w1 x + w2 y + b = 0 over the data: its new coordinates.

    `weights` is (nodes, 2) and `biases` (nodes,). Each line splits the plane into the two sides
    where that node is on or off; the output layer only sees which side each point is on.
    """
    figure = Figure(figsize=(6, 6))
    ax = figure.add_subplot()
    _scatter_classes(ax, points, labels, alpha=0.6)
    (x_min, y_min), (x_max, y_max) = points.min(axis=0), points.max(axis=0)
    x = np.linspace(x_min, x_max, 2)
    y = np.linspace(y_min, y_max, 2)
    for node, ((w1, w2), b) in enumerate(zip(weights, biases, strict=True)):
        if abs(w2) >= abs(w1):  # solve for y unless the line is closer to vertical
            ax.plot(x, -(w1 * x + b) / w2, linewidth=2, label=f"node {node}")
        else:
            ax.plot(-(w2 * y + b) / w1, y, linewidth=2, label=f"node {node}")
    ax.set(xlim=(x_min, x_max), ylim=(y_min, y_max), xlabel="x", ylabel="y", aspect="equal")
    count = f"{len(biases)} node{'s' * (len(biases) != 1)}"
    ax.set_title(f"Hidden nodes' lines  w1 x + w2 y + b = 0 ({count})")
    if len(biases) <= MAX_LEGEND:  # beyond, a legend of colours names nothing
        ax.legend(loc="upper right", fontsize="small", framealpha=0.8)
    return figure


def hidden_space(activations: np.ndarray, labels: np.ndarray) -> Figure:
    """The data in the coordinates of the hidden nodes: a 3-D panel per triple of nodes, at
    most MAX_TRIPLES of them, spread over all the triples.

    `activations` is (points, nodes). With fewer than three nodes, the single 1-D or 2-D view.
    In the right coordinates the classes become separable by a plane, which is all the linear
    output layer can draw.
    """
    nodes = activations.shape[1]
    if nodes < 3:
        figure = Figure(figsize=(6, 5))
        ax = figure.add_subplot()
        columns = activations if nodes == 2 else np.column_stack([activations[:, 0], labels])
        _scatter_classes(ax, columns, labels, alpha=0.6)
        ax.set(xlabel="node 0", ylabel="node 1" if nodes == 2 else "class")
        ax.set_title(f"Hidden activations ({nodes} node{'s' if nodes > 1 else ''})")
        ax.legend(framealpha=0.8)
        return figure
    total = math.comb(nodes, 3)
    count = min(total, MAX_TRIPLES)
    triples = [_nth_triple(nodes, i * total // count) for i in range(count)]
    # One row of 5-inch panels at 100 dpi, and the cube drawn at 80%: its three axis labels stay
    # inside the saved image (at 4 inches, "node 2" was cut off on the right).
    figure = Figure(figsize=(5 * count, 5))  # margins set below: a constrained layout of 3-D
    # axes measures every tick label (0.6 s of a 3-second run, measured)
    for panel, triple in enumerate(triples, start=1):
        ax = figure.add_subplot(1, count, panel, projection="3d")
        for label, colour in enumerate(CLASS_COLOURS):
            chosen = activations[labels == label][:, triple]
            ax.scatter(*chosen.T, s=6, color=colour, depthshade=False, label=f"class {label}")
        ax.set_box_aspect(None, zoom=0.8)
        for axis, node in zip("xyz", triple, strict=True):
            getattr(ax, f"set_{axis}label")(f"node {node}", labelpad=2)
        ax.tick_params(labelsize="small", pad=1)
    # half an inch of the five for the title
    figure.subplots_adjust(left=0.02, right=0.94, bottom=0.04, top=0.9, wspace=0.15)
    figure.axes[0].legend(loc="upper left", markerscale=3)
    shown = "" if count == total else f" ({count} of {total:,} triples)"
    figure.suptitle(f"Hidden activations, three nodes at a time{shown}")
    return figure


def _nth_triple(nodes: int, rank: int) -> tuple[int, ...]:
    """The triple of node indices at `rank` in itertools.combinations(range(nodes), 3)'s order,
    found without listing the others (a layer of 512 nodes has 22 million triples)."""
    triple: list[int] = []
    for left in (3, 2, 1):
        first = triple[-1] + 1 if triple else 0
        while rank >= (block := math.comb(nodes - first - 1, left - 1)):  # those starting here
            rank -= block
            first += 1
        triple.append(first)
    return tuple(triple)
