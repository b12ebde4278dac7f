"""Forecasting a time series: teacher-forced training, one-step and free-running evaluation,
and the baselines any forecast must beat."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanSquaredError

from nnlab.data.series import Scaler, SeriesBatch, SeriesDataModule
from nnlab.models.recurrent import Seq2Seq
from nnlab.tasks.base import Analysis, Task


class SeriesTask(Task):
    """MSE in the model's (scaled) space for training; `mse` in the series' own units.

    One-step models learn, at every step of a window, the value `lag` steps later from the true
    values before it (teacher forcing, as the notebook trains); the encoder-decoder learns the
    next `horizon` values, its decoder fed the true previous ones. `val/mse` and `test/mse` are
    one-step errors in the series' units. After testing, `test/rollout_mse` runs the model free
    over the whole test range, each prediction fed back as the next input, and two baselines
    go beside it: persistence (the next value is the last one) and a straight line fitted to
    the training range.
    """

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        lr_schedule: str = "cosine",
    ) -> None:
        super().__init__(network, optimizer, lr_schedule, {"mse": MeanSquaredError()})
        self.scaler = Scaler(0.0, 1.0, difference=False)

    def setup(self, stage: str) -> None:
        self.scaler = self.trainer.datamodule.scaler

    @property
    def encoder_decoder(self) -> bool:
        return isinstance(self.network, Seq2Seq)

    def model_step(self, batch: SeriesBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs, step_targets, horizon_targets, base = batch
        if self.encoder_decoder:
            outputs = self.network(inputs, teacher=horizon_targets if self.training else None)
            loss, predicted = F.mse_loss(outputs, horizon_targets), outputs[:, 0]
        else:
            outputs = self.network(inputs)
            loss, predicted = F.mse_loss(outputs, step_targets), outputs[:, -1]
        # The next value (`lag` after the window) in the series' units, predicted and true.
        levels = {
            "preds": self.scaler.to_levels(predicted, base),
            "target": self.scaler.to_levels(step_targets[:, -1], base),
        }
        return loss, levels

    @torch.inference_mode()
    def analyse(self, datamodule: SeriesDataModule) -> Analysis:
        from nnlab.plots import series as plots

        self.eval()  # no teacher forcing from here on
        series = datamodule.series
        one_step = {split: self._one_step(datamodule, split) for split in ("val", "test")}
        test_at = datamodule.targets_at["test"]
        start = datamodule.ranges["test"][0]
        rollout = self.rollout(datamodule)
        train_end = datamodule.ranges["train"][1]
        slope, intercept = np.polyfit(np.arange(train_end), series[:train_end], 1)
        metrics = {
            "test/rollout_mse": float(np.mean((rollout - series[start:]) ** 2))
            if len(rollout)
            else float("nan"),
            "test/persistence_mse": float(
                np.mean((series[test_at - datamodule.lag] - series[test_at]) ** 2)
            ),
            "test/linear_mse": float(np.mean((intercept + slope * test_at - series[test_at]) ** 2)),
        }
        figure = plots.forecast(
            series,
            {split: datamodule.ranges[split] for split in ("train", "val", "test")},
            {split: (datamodule.targets_at[split], values) for split, values in one_step.items()},
            (np.arange(start, start + len(rollout)), rollout),
        )
        return Analysis(figures={"forecast": figure}, metrics=metrics)

    def _one_step(self, datamodule: SeriesDataModule, split: str) -> np.ndarray:
        batch = tuple(part.to(self.device) for part in datamodule.splits[split])
        return self.model_step(batch)[1]["preds"].cpu().numpy()

    def rollout(self, datamodule: SeriesDataModule) -> np.ndarray:
        """Free-running forecast of the whole test range: from the true window before it, each
        prediction is appended to the inputs of the next (lag 1; empty for a longer lag)."""
        if datamodule.lag != 1:
            return np.empty(0)
        start, end = datamodule.ranges["test"]
        inputs = list(
            torch.as_tensor(datamodule.model_inputs[start - datamodule.window : start]).float()
        )
        level = torch.tensor(float(datamodule.series[start - 1]))
        levels: list[float] = []
        while len(levels) < end - start:
            window = torch.stack(inputs[-datamodule.window :])[None, :, None].to(self.device)
            outputs = self.network(window)[0].cpu()
            for value in outputs if self.encoder_decoder else outputs[-1:]:
                level = self.scaler.to_levels(value, level)
                levels.append(float(level))
                inputs.append(value)  # the model's own prediction, not the true value
        return np.array(levels[: end - start])
