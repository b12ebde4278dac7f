"""The base of nnlab's tasks: a LightningModule in Lightning's standard contract.

Any LightningModule runs through nnlab; this base is what the built-in tasks share, written on
public hooks only, for you to copy or extend. A subclass writes `model_step(batch)` (the mean
loss and its metrics' inputs) and passes its torchmetrics to `__init__`. The base gives:

- the network and the optimizer built from their configs (`network: ${model}`, `optimizer:
  ${optimizer}`) and kept, as configs, in every checkpoint: `MyTask.load_from_checkpoint(path)`
  needs nothing else;
- `training_step`, `validation_step`, `test_step`: the loss and the metrics of each stage,
  logged once per epoch as `train/loss`, `val/acc`, ...;
- `lr_schedule: cosine`, decaying the learning rate to zero over the whole budget.

nnlab reads one optional hook from any module: `analyse(datamodule) -> Analysis`, the figures
and extra results after testing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import hydra.utils
import lightning as L
import numpy as np
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection

from nnlab.checks import NO_VALUE, BadValue, check_choice, check_float

Batch = tuple[torch.Tensor, ...]
LR_SCHEDULES = ("constant", "cosine")
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
# Checked by name, so that the message names the key (torch takes lr=0, which trains nothing,
# and keeps the rate in the parameters' dtype: float32's largest value is the limit).
OPTIMIZER_CHECKS = {
    "lr": {"above": 0, "below": 3.4e38},
    "weight_decay": {"minimum": 0},
    "momentum": {"minimum": 0},
    "eps": {"above": 0},
}


@dataclass
class Analysis:
    """What a task reports after testing, beyond the metrics it logged while training.

    figures: saved as figures/<name>.png, and logged as images.
    metrics: added to metrics.json, and logged as scalars.
    breakdown: added to metrics.json only: values that a table and a figure show together
        (accuracy per class, per perturbation), rather than a chart of one point each.
    tables: rows of a table, saved as <name>.csv, and logged as text.
    arrays: saved together as <name>.npz (predictions, for nnlab-compare).
    """

    figures: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    breakdown: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


class Task(L.LightningModule):
    """A network, its optimizer and its metrics: `training_step` returns the loss, and the
    Trainer steps the optimizer (so its clipping, accumulation and precision apply)."""

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        lr_schedule: str = "constant",
        metrics: Mapping[str, Metric] | None = None,
    ) -> None:
        super().__init__()
        modules = ["network"] if isinstance(network, nn.Module) else []  # configs are kept
        self.save_hyperparameters(ignore=["metrics", *modules])
        self.network = network if modules else hydra.utils.instantiate(network)
        if not isinstance(self.network, nn.Module):  # a config without a _target_, say
            raise BadValue("network", NO_VALUE, "expected a torch.nn.Module or its config")
        self.optimizer_config = dict(optimizer or ADAM)
        for key, limits in OPTIMIZER_CHECKS.items():
            if key in self.optimizer_config:
                check_float(f"optimizer.{key}", self.optimizer_config[key], **limits)
        self.lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        # A NaN loss stays NaN. (Not nan_strategy="disable": torchmetrics 1.9 then drops the
        # weights (torchmetrics#3434), and the loss was the mean over batches, not examples.)
        stage = MetricCollection(
            {"loss": MeanMetric(nan_strategy=math.nan), **(metrics or {})}, compute_groups=False
        )
        self.train_metrics = stage.clone(prefix="train/")
        self.val_metrics = stage.clone(prefix="val/")
        self.test_metrics = stage.clone(prefix="test/")
        # The epoch's running train values are kept in checkpoints: a run resumed in the middle
        # of an epoch ends it with the values of a run never stopped.
        self.train_metrics.persistent(True)

    def model_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss of `batch`, and the keyword arguments of the metrics' `update`."""
        raise NotImplementedError

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, inputs = self.model_step(batch)
        self.train_metrics.update(value=loss.detach(), weight=len(batch[0]), **inputs)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, inputs = self.model_step(batch)
        self.val_metrics.update(value=loss, weight=len(batch[0]), **inputs)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, inputs = self.model_step(batch)
        self.test_metrics.update(value=loss, weight=len(batch[0]), **inputs)

    # Each stage's values are logged once, at its epoch's end: a `self.log` costs Lightning
    # about 0.35 ms, as much as the MNIST MLP's whole step at batch 128. "step", the x-axis,
    # counts optimizer steps, whatever a batch holds.

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute(), prog_bar=True, batch_size=1, sync_dist=True)
        self.log("step", float(self.global_step), batch_size=1, sync_dist=True)
        self.train_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:  # Lightning's check that validation runs
            self.log_dict(self.val_metrics.compute(), prog_bar=True, batch_size=1, sync_dist=True)
            self.log("step", float(self.global_step), batch_size=1, sync_dist=True)
        self.val_metrics.reset()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), batch_size=1, sync_dist=True)
        self.test_metrics.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        make = hydra.utils.instantiate(self.optimizer_config)
        try:
            optimizer = make(self.parameters())
        except (ValueError, TypeError, IndexError) as error:  # torch's checks of its arguments
            target = self.optimizer_config.get("_target_")
            raise BadValue(
                "optimizer", NO_VALUE, f"{target} refused its arguments: {error}"
            ) from None
        if self.lr_schedule == "constant":
            return {"optimizer": optimizer}
        total = self.total_steps()
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total))
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def total_steps(self) -> int:
        """The optimizer steps this fit takes (max_steps, or max_epochs of batches): Lightning
        counts them, loading the training data to know its batches."""
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise BadValue("lr_schedule", self.lr_schedule, "cosine needs a step or epoch budget")
        return int(total)

    def analyse(self, datamodule: L.LightningDataModule) -> Analysis:
        """After testing: the trained network's figures, and any metrics, tables or arrays
        beyond those logged while training (see Analysis)."""
        return Analysis()
