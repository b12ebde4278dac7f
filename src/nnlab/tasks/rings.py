"""Binary classification of the two rings, and the notebook's figures of what was learned."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy

from nnlab.data.rings import RingsDataModule
from nnlab.models.mlp import MLP
from nnlab.outputs import Analysis
from nnlab.tasks.base import Batch, Task

FIGURE_POINTS = 600  # points drawn per figure: enough to see the rings, few enough to render fast


class RingsTask(Task):
    """One logit per point, and BCEWithLogits as the loss, as the notebook advises."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(outputs.squeeze(-1), targets)

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy()}, compute_groups=False)

    def metric_arguments(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        # Hard labels, not logits: torchmetrics guesses whether floats are logits per batch.
        return {"preds": (outputs.squeeze(-1) > 0).long(), "target": batch[1].long()}

    @torch.no_grad()
    def analyse(self, datamodule: RingsDataModule) -> Analysis:
        from nnlab.plots import rings as plots

        network = self.network.cpu()
        points, labels = (t.cpu() for t in datamodule.splits["train"])
        shown = torch.randperm(len(points), generator=torch.Generator().manual_seed(0))[
            :FIGURE_POINTS
        ]
        points, labels = points[shown], labels[shown]
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
