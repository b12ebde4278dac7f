"""nnlab's base task: a LightningModule in Lightning's standard contract, plus nnlab's extras.

Any LightningModule runs through nnlab. This base is for tasks that want what nnlab's own
tasks share: a network and an optimizer built from their configs (and kept in checkpoints, so
that `MyTask.load_from_checkpoint(path)` needs nothing else), a cosine schedule over the whole
budget, and each stage's loss and metrics logged once per epoch. A subclass writes
`model_step` (the loss and the metrics' inputs of one batch) and sets `self.metrics`.

nnlab reads two optional hooks from any module: `metric_names` (the columns of TensorBoard's
HPARAMS tab) and `analyse(datamodule)` (figures and extra results after testing).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric, Metric, MetricCollection

from nnlab.checks import NO_VALUE, BadValue, check_choice, check_fits_in_memory, check_float
from nnlab.data.in_memory import Batch
from nnlab.errors import ConfigError
from nnlab.instantiate import build
from nnlab.internals import set_update_count
from nnlab.outputs import Analysis

STAGES = ("train", "val", "test")
TRAIN_METRICS_STATE = "nnlab_train_metrics"  # the checkpoint's key for the epoch's running sums
UPDATES = "update_count"  # beside a metric's states in that entry
LR_SCHEDULES = ("constant", "cosine")
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}

# Optimizer arguments checked by name, so that the message names the key rather than the class
# (torch accepts lr=0, which trains nothing).
OPTIMIZER_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    # below float32's largest value: torch keeps the rate in the parameters' dtype
    "lr": lambda key, value: check_float(key, value, above=0, below=3.4e38),
    "weight_decay": lambda key, value: check_float(key, value, minimum=0),
    "momentum": lambda key, value: check_float(key, value, minimum=0),
    "eps": lambda key, value: check_float(key, value, above=0),
}


class HeldBatch(NamedTuple):
    """A batch's metric inputs, held until the metrics take several batches at once."""

    loss: torch.Tensor
    count: int
    shapes: dict[str, torch.Size]  # each argument's shape beyond its rows
    arguments: dict[str, torch.Tensor]


class StageMetrics(nn.Module):
    """The mean loss and the task's torchmetrics, one copy of each per stage.

    `update` is called at every batch; `compute` gives `{stage}/loss` and `{stage}/<name>` over
    the whole epoch (under DDP, torchmetrics syncs them across processes), and resets.
    Logging once per epoch matters for speed: each `self.log` call costs Lightning about
    0.35 ms, as much as the MNIST MLP's optimizer step at batch 128.

    For the same reason the metrics see the batches HELD_BATCHES at a time, concatenated (and
    all those held before any `compute` or checkpoint): a torchmetrics `update` costs tens of
    microseconds of Python whatever its batch's size. On the MNIST MLP at batch 256, updating
    the loss and the accuracy at every batch took 90 us, 4% of a step. Batches are held only
    while every argument is a tensor with a row per example and the rows keep their shape;
    any other batch goes to the metrics alone. A metric whose update is not the same over a
    concatenation sees a difference: torchmetrics decides whether float `preds` are
    probabilities or logits at each update, so give it labels, as the built-in tasks do.
    """

    HELD_BATCHES = 32

    def __init__(self, **metrics: Metric) -> None:
        super().__init__()
        for stage in STAGES:  # attributes, not a ModuleDict: "train" is a method of nn.Module
            # A NaN loss stays NaN. Not nan_strategy="disable": torchmetrics 1.9 then drops the
            # weights (torchmetrics#3434), and the loss was the mean over batches, not examples.
            setattr(self, f"{stage}_loss", MeanMetric(nan_strategy=math.nan))
            setattr(
                self, f"{stage}_metrics", MetricCollection(metrics, compute_groups=False).clone()
            )
        self._held: dict[str, list[HeldBatch]] = {stage: [] for stage in STAGES}

    @property
    def names(self) -> list[str]:
        return [
            f"{s}/{n}" for s in STAGES for n in ("loss", *self._metrics(s).keys(keep_base=True))
        ]

    def update(self, stage: str, loss: torch.Tensor, count: int, **arguments: Any) -> None:
        """Add a batch of `count` examples whose mean loss is `loss`; `arguments` go to the
        metrics' `update` (each takes the ones its signature names)."""
        held = self._held[stage]
        shapes = {
            name: argument.shape[1:]
            for name, argument in arguments.items()
            if isinstance(argument, torch.Tensor) and argument.ndim and len(argument) == count
        }
        by_row = len(shapes) == len(arguments)  # every argument has a row per example
        if held and (not by_row or held[-1].shapes != shapes):
            self._give(stage)
        if not by_row:  # nothing to concatenate: the metrics take this batch alone
            self._loss(stage).update(loss.detach(), weight=count)
            if len(self._metrics(stage)):
                self._metrics(stage).update(**arguments)
            return
        detached = {name: argument.detach() for name, argument in arguments.items()}
        held.append(HeldBatch(loss.detach().mean(), count, shapes, detached))
        if len(held) >= self.HELD_BATCHES:
            self._give(stage)

    def _give(self, stage: str) -> None:
        """Update the stage's metrics with the batches held, as one batch."""
        held = self._held[stage]
        if not held:
            return
        losses = torch.stack([batch.loss for batch in held])
        counts = torch.tensor([batch.count for batch in held])  # MeanMetric casts to its dtype
        self._loss(stage).update(losses, weight=counts.to(losses.device))
        if len(self._metrics(stage)):
            names = held[0].arguments.keys()
            joined = {name: torch.cat([batch.arguments[name] for batch in held]) for name in names}
            self._metrics(stage).update(**joined)
        held.clear()

    def compute(self, stage: str) -> dict[str, torch.Tensor]:
        self._give(stage)
        values = {f"{stage}/loss": self._loss(stage).compute()}
        collection = self._metrics(stage)
        values |= {f"{stage}/{name}": value for name, value in collection.compute().items()}
        self._loss(stage).reset()
        collection.reset()
        return values

    def state(self, stage: str) -> dict[str, dict[str, Any]]:
        """The stage's running sums (tensors), by metric: what a checkpoint keeps of an epoch
        under way."""
        self._give(stage)
        return {
            name: {**metric.metric_state, UPDATES: torch.tensor(metric.update_count)}
            for name, metric in self._each(stage)
        }

    def load_state(self, stage: str, state: Mapping[str, Mapping[str, Any]]) -> None:
        self._held[stage].clear()
        for name, metric in self._each(stage):
            saved = dict(state.get(name, {}))
            set_update_count(metric, int(saved.pop(UPDATES, 0)))  # else compute() warns
            for attribute, value in saved.items():
                here = getattr(metric, attribute)
                if isinstance(value, torch.Tensor):
                    value = value.to(here.device)
                elif isinstance(value, list):  # a cat state: tensors to concatenate
                    value = [part.to(metric.device) for part in value]
                setattr(metric, attribute, value)

    def pending(self, stage: str) -> dict[str, torch.Tensor]:
        """The stage's values over batches seen but not yet computed, or {} (computing resets)."""
        self._give(stage)
        return self.compute(stage) if self._loss(stage).update_count else {}

    def _each(self, stage: str) -> list[tuple[str, Metric]]:
        return [("loss", self._loss(stage)), *self._metrics(stage).items(keep_base=True)]

    def _loss(self, stage: str) -> MeanMetric:
        return getattr(self, f"{stage}_loss")

    def _metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")


class Task(L.LightningModule):
    """A network, its optimizer and its metrics, trained in Lightning's standard contract:
    `training_step` returns the loss, and the Trainer steps the optimizer.

    `network` and `optimizer` are configs (a `_target_` and its arguments; the optimizer's
    `_partial_: true`), built here and kept in the checkpoint's hyperparameters; an nn.Module
    works too (then `load_from_checkpoint` needs it again). `lr_schedule: cosine` decays the
    learning rate to zero over the whole budget, one scheduler step per optimizer step.
    """

    metrics: StageMetrics

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        objects = [name for name, value in (("network", network),) if isinstance(value, nn.Module)]
        self.save_hyperparameters(ignore=objects)
        self.network = network if isinstance(network, nn.Module) else build_network(network)
        if not isinstance(self.network, nn.Module):  # a config without a _target_, say
            raise BadValue("network", NO_VALUE, "expected a torch.nn.Module or its config")
        self.optimizer_config = dict(optimizer or ADAM)
        self.lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        self.make_optimizer(self.network.parameters())  # refused values stop the run here

    # What a subclass writes.

    def model_step(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """The mean loss of `batch`, and the keyword arguments of the metrics' `update`."""
        raise NotImplementedError

    # Lightning's standard contract.

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss, arguments = self.model_step(batch)
        self.metrics.update("train", loss, len(batch[0]), **arguments)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        loss, arguments = self.model_step(batch)
        self.metrics.update("val", loss, len(batch[0]), **arguments)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        loss, arguments = self.model_step(batch)
        self.metrics.update("test", loss, len(batch[0]), **arguments)

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:  # Lightning's check that validation runs: not a result
            self.metrics.compute("val")
        else:
            self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # A checkpoint taken mid-epoch keeps the epoch's running train metrics, so that a run
        # resumed from it logs the same epoch values as one that never stopped.
        checkpoint[TRAIN_METRICS_STATE] = self.metrics.state("train")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.metrics.load_state("train", checkpoint.get(TRAIN_METRICS_STATE, {}))

    def unlogged_metrics(self) -> dict[str, float]:
        """Train values of an epoch that fit ended without logging: a run resumed from a
        checkpoint taken after its last step, but before that epoch's end, trains no further."""
        return {name: float(value) for name, value in self.metrics.pending("train").items()}

    def log_epoch(self, stage: str) -> None:
        """Log the stage's epoch values. The "step" value is TensorBoard's x-axis: optimizer
        steps, whatever a batch holds."""
        self.log_dict(self.metrics.compute(stage), prog_bar=stage != "test", batch_size=1)
        self.log("step", float(self.global_step), batch_size=1)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.make_optimizer(self.parameters())
        if self.lr_schedule == "constant":
            return {"optimizer": optimizer}
        total = self.total_optimizer_steps()
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # Speed: Lightning's per-batch path, made cheaper for every task built on this base.

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning names the hook under way in `_current_fx_name` around each hook it calls,
        # about 30 times a batch; nn.Module's __setattr__ takes 1.3 us where a plain one takes
        # 0.13 (a string is never a parameter, a buffer or a module).
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    # nnlab's optional hooks.

    @property
    def metric_names(self) -> list[str]:
        """Every metric this task logs: metrics.json's keys and TensorBoard's HPARAMS columns."""
        return self.metrics.names

    def analyse(self, datamodule: L.LightningDataModule) -> Analysis:
        """After testing: the trained network's figures, and any metrics, tables or arrays
        beyond those logged while training (see nnlab.outputs.Analysis)."""
        return Analysis()

    # Helpers.

    def make_optimizer(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer its config describes, over `parameters`; bad values as BadValue."""
        for key, check in OPTIMIZER_CHECKS.items():
            if key in self.optimizer_config:
                check(f"optimizer.{key}", self.optimizer_config[key])
        make = build(self.optimizer_config, "optimizer")
        try:
            return make(parameters)
        except (ValueError, TypeError, IndexError) as error:  # torch's checks of its arguments
            target = self.optimizer_config.get("_target_")
            raise BadValue(
                "optimizer", NO_VALUE, f"{target} refused its arguments: {error}"
            ) from None

    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass over the training data."""
        trainer = self.trainer
        trainer.estimated_stepping_batches  # noqa: B018 - makes Lightning load the training data
        return math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)

    def total_optimizer_steps(self) -> int:
        """The optimizer steps this fit will take: max_steps, or max_epochs of steps_per_epoch.

        (Lightning's estimated_stepping_batches counts a single epoch when only max_steps is
        set, which for a full-batch task is one step.)
        """
        trainer = self.trainer
        limits = [trainer.max_steps] if trainer.max_steps and trainer.max_steps > 0 else []
        if trainer.max_epochs and trainer.max_epochs > 0:
            limits.append(self.steps_per_epoch() * trainer.max_epochs)
        if not limits:
            raise ConfigError("task.lr_schedule", self.lr_schedule, "needs a step or epoch budget")
        return min(limits)


def build_network(config: Mapping[str, Any]) -> Any:
    """The network `config` describes, refused (BadValue) if its weights, gradients and Adam's
    state would not fit in the memory free here: a mistyped width would otherwise fail to
    allocate with a traceback, or be killed by the operating system with no message. It is
    built on the meta device first, where parameters have shapes and no memory; that build
    draws no random numbers, so the weights are those of a single build."""
    try:
        with torch.device("meta"):
            probe = build(config, "network")
    except ConfigError:  # a bad value, found before any memory is taken
        raise
    except Exception:  # the build below raises it again, or does not need the meta device
        probe = None
    if isinstance(probe, nn.Module):
        check_fits_in_memory("network", NO_VALUE, sum(p.numel() for p in probe.parameters()))
    return build(config, "network")


def needs_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer.step` must be given a closure (LBFGS)."""
    closure = inspect.signature(type(optimizer).step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty
