"""Forecasting a time series: teacher-forced training, one-step and free-running evaluation,
and the baselines any forecast must beat."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import MeanSquaredError, MetricCollection

from nnlab.data.series import SeriesBatch, SeriesDataModule
from nnlab.models.recurrent import Seq2Seq
from nnlab.outputs import Analysis
from nnlab.tasks.base import Task


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

    def setup(self, stage: str) -> None:
        self.scaler = self.trainer.datamodule.scaler

    @property
    def encoder_decoder(self) -> bool:
        return isinstance(self.network, Seq2Seq)

    def outputs(self, batch: SeriesBatch) -> torch.Tensor:
        if self.encoder_decoder:
            return self.network(batch[0], teacher=batch[2] if self.training else None)
        return self.network(batch[0])

    def targets(self, batch: SeriesBatch) -> torch.Tensor:
        return batch[2] if self.encoder_decoder else batch[1]

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs, targets)

    def make_metrics(self) -> MetricCollection:
        return MetricCollection({"mse": MeanSquaredError()})

    def metric_arguments(
        self, outputs: torch.Tensor, batch: SeriesBatch
    ) -> dict[str, torch.Tensor]:
        """The next value (`lag` after the window) in the series' units, predicted and true."""
        predicted = outputs[:, 0] if self.encoder_decoder else outputs[:, -1]
        base = batch[3]
        return {
            "preds": self.scaler.to_levels(predicted, base),
            "target": self.scaler.to_levels(batch[1][:, -1], base),
        }

    @property
    def metric_names(self) -> list[str]:
        extra = ["test/rollout_mse", "test/persistence_mse", "test/linear_mse"]
        return [*super().metric_names, *extra]

    @torch.inference_mode()
    def analyse(self, datamodule: SeriesDataModule) -> Analysis:
        from nnlab.plots import series as plots

        self.network.eval()
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
        predicted = self.outputs(batch)
        predicted = predicted[:, 0] if self.encoder_decoder else predicted[:, -1]
        return self.scaler.to_levels(predicted, batch[3]).cpu().numpy()

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
