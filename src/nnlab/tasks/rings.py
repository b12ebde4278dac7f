"""Binary classification of the two rings, and the notebook's figures of what was learned."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import BinaryAccuracy

from nnlab.data.rings import RingsDataModule
from nnlab.models.mlp import MLP
from nnlab.tasks.base import Analysis, Batch
from nnlab.tasks.full_batch import FullBatchTask

FIGURE_POINTS = 600  # points drawn per figure: enough to see the rings, few enough to render fast


class RingsTask(FullBatchTask):
    """One logit per point and BCEWithLogits as the loss, as the notebook advises; accuracy.

    Full-batch gradient descent, `steps_per_batch` steps on each batch (see FullBatchTask).
    """

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        lr_schedule: str = "constant",
        steps_per_batch: int = 100,
    ) -> None:
        accuracy = BinaryAccuracy(validate_args=False)
        super().__init__(network, optimizer, lr_schedule, steps_per_batch, {"acc": accuracy})

    def model_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        points, labels = batch
        logits = self.network(points).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        # Hard labels, not logits: torchmetrics guesses per batch whether floats are logits.
        # (One comparison: without its argument checks, BinaryAccuracy compares booleans with
        # the 0/1 float labels as they are, and each tensor op costs the full-batch step 4 us.)
        return loss, {"preds": logits > 0, "target": labels}

    @torch.no_grad()
    def analyse(self, datamodule: RingsDataModule) -> Analysis:
        from nnlab.plots import rings as plots

        network = self.network.cpu()
        points, labels = datamodule.splits["train"]
        shown = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))
        points, labels = points[shown[:FIGURE_POINTS]], labels[shown[:FIGURE_POINTS]]
        grid_x, grid_y = np.meshgrid(
            *(np.linspace(low, high, 200) for low, high in _limits(points))
        )
        grid = torch.from_numpy(
            np.column_stack([grid_x.ravel(), grid_y.ravel()]).astype(np.float32)
        )
        probability = torch.sigmoid(network(grid)).reshape(grid_x.shape).numpy()
        figures = {
            "decision_boundary": plots.decision_boundary(
                points.numpy(), labels.numpy(), grid_x, grid_y, probability
            )
        }
        if isinstance(network, MLP) and network.widths:
            first = network.hidden[0]
            figures["hidden_lines"] = plots.hidden_lines(
                points.numpy(), labels.numpy(), first.weight.numpy(), first.bias.numpy()
            )
            last_hidden = network.hidden_activations(points)[-1]
            figures["hidden_activations"] = plots.hidden_space(last_hidden.numpy(), labels.numpy())
        return Analysis(figures=figures)


def _limits(points: torch.Tensor) -> list[tuple[float, float]]:
    low, high = points.min(dim=0).values, points.max(dim=0).values
    margin = 0.1 * (high - low)
    return list(zip((low - margin).tolist(), (high + margin).tolist(), strict=True))
