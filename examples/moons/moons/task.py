"""The same classifier as an nnlab Task: nnlab builds its network from `model=`, and it adds
the extras nnlab records (a figure after testing, the metrics for TensorBoard's HPARAMS)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from nnlab.tasks.base import Analysis, Task


class MoonsTask(Task):
    def __init__(self, network, optimizer=None, lr_schedule: str = "constant"):
        accuracy = MulticlassAccuracy(2, average="micro")
        super().__init__(network, optimizer, lr_schedule, metrics={"acc": accuracy})

    def model_step(self, batch):
        points, labels = batch
        logits = self.network(points)
        loss = F.cross_entropy(logits, labels)
        return loss, {"preds": logits.argmax(dim=1), "target": labels}

    @torch.no_grad()
    def analyse(self, datamodule) -> Analysis:
        from matplotlib.figure import Figure

        points, labels = datamodule.datasets["test"].tensors
        grid = np.mgrid[-1.5:2.5:200j, -1:1.5:200j]
        flat = torch.tensor(grid.reshape(2, -1).T, dtype=torch.float32, device=self.device)
        upper = self.network(flat).softmax(dim=1)[:, 1].cpu().numpy().reshape(grid.shape[1:])
        figure = Figure(figsize=(5, 4))
        axes = figure.add_subplot()
        axes.contourf(grid[0], grid[1], upper, levels=20, cmap="RdBu_r", alpha=0.6)
        axes.scatter(*points.T, c=labels, cmap="RdBu_r", s=8, edgecolors="k", linewidths=0.2)
        axes.set_title("P(lower moon) over the plane, test points")
        return Analysis(figures={"decision_boundary": figure})
