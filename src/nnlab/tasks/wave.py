"""Regression of the damped sine, measuring the fit on each half of x separately."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError, R2Score

from nnlab.checks import check_choice, check_float
from nnlab.data.wave import WaveDataModule
from nnlab.models.mlp import MLP
from nnlab.tasks.base import Analysis, Batch
from nnlab.tasks.full_batch import FullBatchTask

CRITERIA = ("mse", "relative")


class R2Between(R2Score):
    """R², the share of the target's variance explained, over the points with low <= input < high.

    The notebook's question is whether the large-amplitude left side fits better than the small
    right side. Raw MSE would say yes whatever the fit, since the left's values are larger;
    R² divides each side's error by that side's own variance.
    """

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low, self.high = low, high

    def update(self, preds: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor) -> None:
        inside = (inputs >= self.low) & (inputs < self.high)
        super().update(preds[inside], target[inside])

    def compute(self) -> torch.Tensor:
        # NaN, not an error, when the interval holds fewer than two points (split_at near an end).
        if self.total < 2:
            return torch.tensor(float("nan"), device=self.sum_error.device)
        return super().compute()


class WaveTask(FullBatchTask):
    """MSE on a linear output, or the notebook's relative error (`criterion: relative`); R² on
    each side of `split_at`. Full-batch gradient descent, as the rings (see FullBatchTask)."""

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        criterion: str = "mse",
        relative_eps: float = 0.1,
        split_at: float = 0.0,
        lr_schedule: str = "constant",
        steps_per_batch: int = 100,
    ) -> None:
        split_at = check_float("split_at", split_at)
        inf = float("inf")
        metrics = {
            "mse": MeanSquaredError(),
            "r2_left": R2Between(-inf, split_at),
            "r2_right": R2Between(split_at, inf),
        }
        super().__init__(network, optimizer, lr_schedule, steps_per_batch, metrics)
        self.criterion = check_choice("criterion", criterion, CRITERIA)
        self.relative_eps = check_float("relative_eps", relative_eps, above=0)
        self.split_at = split_at

    def model_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs, targets = batch
        outputs = self.network(inputs)
        if self.criterion == "mse":
            loss = F.mse_loss(outputs, targets)
        else:  # ((y - prediction) / y)^2, with eps keeping the zeros of the sine from dominating
            loss = (((outputs - targets) / (targets.abs() + self.relative_eps)) ** 2).mean()
        arguments = {
            "preds": outputs.squeeze(-1),
            "target": targets.squeeze(-1),
            "inputs": inputs.squeeze(-1),
        }
        return loss, arguments

    @torch.no_grad()
    def analyse(self, datamodule: WaveDataModule) -> Analysis:
        from nnlab.plots import wave as plots

        network = self.network.cpu()
        inputs, targets = datamodule.splits["train"]
        predicted = network(inputs)
        x, y = inputs.squeeze(-1).numpy(), targets.squeeze(-1).numpy()
        figures = {
            "prediction": plots.prediction(x, y, predicted.squeeze(-1).numpy(), self.split_at)
        }
        if isinstance(network, MLP) and network.widths:
            binary = (network.hidden_activations(inputs)[-1] > 0.5).float()
            thresholded = network.output(binary).squeeze(-1).numpy()
            figures["binary_activations"] = plots.binary_activations(
                x, y, predicted.squeeze(-1).numpy(), thresholded
            )
        return Analysis(figures=figures)
