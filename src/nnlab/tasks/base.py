"""The training path every task shares: optimizer steps, metrics and logging, in one place."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn
from torchmetrics import MetricCollection

from nnlab.config import check_choice, check_float
from nnlab.errors import ConfigError, Diverged
from nnlab.outputs import Analysis

Batch = tuple[torch.Tensor, torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
STAGES = ("train", "val", "test")
LR_SCHEDULES = ("constant", "cosine")


class Task(L.LightningModule, ABC):
    """A network, its loss and its metrics; one optimizer step per minibatch it is given.

    Lightning's per-batch machinery (hooks, logging, progress bar, moving data) costs about as
    much as a whole optimizer step of the notebook's small networks. So each training batch
    Lightning hands over is a list of minibatches, and the task takes one step per minibatch
    inside one `training_step` (manual optimization): the data module decides how many
    (`data.steps_per_batch`; for full-batch gradient descent the list repeats the whole
    training set). `trainer.max_steps` still counts optimizer steps, exactly.

    Lightning also runs five hooks around every backward and optimizer step, about 0.1 ms in
    all. So when nothing needs them (one process, no gradient scaling), all but the last step
    of a batch are plain `loss.backward()` and `optimizer.step()` calls; the last goes through
    Lightning, so callbacks see one step per batch, as they see everything else. Under DDP or
    fp16 every step goes through Lightning, which syncs and scales the gradients.

    Metrics are logged as `<stage>/<name>` (`train/loss`, `val/acc`, ...) against the optimizer
    step. Train values describe the last step of each batch; val and test values the whole split.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerFactory = torch.optim.Adam,
        gradient_clip_val: float | None = None,
        lr_schedule: str = "constant",
    ) -> None:
        super().__init__()
        # The task's own arguments go into checkpoints and hparams.yaml; the run's whole
        # config is in .hydra/config.yaml.
        self.save_hyperparameters(ignore=["network", "optimizer"])
        self.automatic_optimization = False
        self.network = network
        self.make_optimizer = optimizer
        self.gradient_clip_val = (
            None
            if gradient_clip_val is None
            else check_float("gradient_clip_val", gradient_clip_val, above=0)
        )
        self.lr_schedule = check_choice("lr_schedule", lr_schedule, LR_SCHEDULES)
        # As attributes (train_metrics, ...) so that Lightning moves them with the module.
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", self.make_metrics().clone(prefix=f"{stage}/"))
        self.last_validated_step = -1
        self._plain_inner_steps = False
        self._scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    # What each task defines.

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of the network's raw outputs."""

    def outputs(self, batch: Batch) -> torch.Tensor:
        """The network's outputs for a batch (an encoder-decoder also gets its teacher here)."""
        return self.network(batch[0])

    def targets(self, batch: Batch) -> torch.Tensor:
        """What the network's outputs are compared with: the labels (an autoencoder: the inputs)."""
        return batch[1]

    @abstractmethod
    def make_metrics(self) -> MetricCollection:
        """The torchmetrics computed on every stage, keyed by their names without the stage."""

    @abstractmethod
    def metric_arguments(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Keyword arguments for the metrics' `update` (`preds`, `target`, and any extras)."""

    def analyse(self, datamodule: L.LightningDataModule) -> Analysis:
        """After testing: the trained network's figures, and any metrics, tables or arrays
        beyond those logged while training (see nnlab.outputs.Analysis)."""
        return Analysis()

    # The shared path.

    @property
    def metric_names(self) -> list[str]:
        """Every metric this task logs, for metrics.json and TensorBoard's HPARAMS tab."""
        return [
            name
            for stage in STAGES
            for name in [f"{stage}/loss", *self.stage_metrics(stage).keys(keep_base=False)]
        ]

    def stage_metrics(self, stage: str) -> MetricCollection:
        return getattr(self, f"{stage}_metrics")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.make_optimizer(self.network.parameters())
        if self.lr_schedule == "constant":
            return {"optimizer": optimizer}
        # Cosine decay to zero over the whole budget, one scheduler step per optimizer step.
        total = self._budget_in_steps()
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def _budget_in_steps(self) -> int:
        """The optimizer steps this fit will take: max_steps, or max_epochs times the data
        module's `steps_per_epoch` (Lightning's own estimate counts batches, not steps)."""
        trainer = self.trainer
        per_epoch = getattr(trainer.datamodule, "steps_per_epoch", None)
        limits = [trainer.max_steps] if trainer.max_steps and trainer.max_steps > 0 else []
        if per_epoch and trainer.max_epochs and trainer.max_epochs > 0:
            limits.append(per_epoch * trainer.max_epochs)
        if not limits:
            raise ConfigError("task.lr_schedule", self.lr_schedule, "needs a step or epoch budget")
        return min(limits)

    def on_train_start(self) -> None:
        trainer = self.trainer
        self._plain_inner_steps = isinstance(trainer.strategy, SingleDeviceStrategy) and (
            getattr(trainer.precision_plugin, "scaler", None) is None
        )
        self._scheduler = self.lr_schedulers() if self.lr_schedule != "constant" else None

    def training_step(self, batch: list[Batch], batch_idx: int) -> None:
        optimizer = self.optimizers()
        minibatches = batch[: self._steps_left()]
        first_step = self.global_step + 1
        losses = []
        for index, minibatch in enumerate(minibatches):
            outputs = self.outputs(minibatch)
            loss = self.loss(outputs, self.targets(minibatch))
            optimizer.zero_grad()
            plain = self._plain_inner_steps and index < len(minibatches) - 1
            loss.backward() if plain else self.manual_backward(loss)
            if self.gradient_clip_val is not None:  # by norm, as Lightning's own option does
                self.clip_gradients(optimizer, self.gradient_clip_val, "norm")
            if plain:
                optimizer.optimizer.step()
                self._count_plain_step()
            else:
                optimizer.step()
            if self._scheduler is not None:  # manual optimization steps its schedule itself
                self._scheduler.step()
            losses.append(loss.detach())
            if self.trainer.should_stop:  # a stop signal or callback: end after this step
                break
        self._check_finite(torch.stack(losses), first_step)
        if self._logging_this_batch():
            self._log_stage("train", losses[-1], outputs.detach(), minibatch)
        if 0 < self.trainer.max_steps <= self.global_step:
            # Stopping "early" at the budget makes Lightning validate, and so checkpoint, the
            # final weights inside fit, even when the budget is not a multiple of the interval.
            self.trainer.should_stop = True

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.last_validated_step = self.global_step

    def _check_finite(self, losses: torch.Tensor, first_step: int) -> None:
        """Stop at the first NaN or infinite loss of the batch, naming its step.

        Checked once per batch, not per step: reading a value back from a GPU waits for it.
        """
        finite = torch.isfinite(losses)
        if bool(finite.all()):
            return
        bad = int((~finite).nonzero()[0])
        checkpoint = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or None
        raise Diverged(first_step + bad, "train/loss", float(losses[bad]), checkpoint)

    def _count_plain_step(self) -> None:
        """Count a step Lightning did not see, as its own optimizer wrapper would: global_step,
        max_steps and checkpoints all read this counter."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.increment_ready()
        progress.increment_completed()

    def _logging_this_batch(self) -> bool:
        """Whether Lightning writes the logs after this batch (every trainer.log_every_n_steps
        batches), or it ends an epoch. Each `self.log` costs about 1.5 ms, as much as an
        optimizer step of the MNIST MLP, so the train metrics are computed and logged only then.
        """
        trainer = self.trainer
        if trainer.is_last_batch or 0 < trainer.max_steps <= self.global_step:
            return True
        return getattr(trainer._logger_connector, "should_update_logs", True)

    def _steps_left(self) -> int | None:
        """Optimizer steps left in the budget (None: no step budget)."""
        max_steps = self.trainer.max_steps
        return None if max_steps is None or max_steps < 0 else max(1, max_steps - self.global_step)

    def _evaluate(self, stage: str, batch: Batch) -> None:
        outputs = self.outputs(batch)
        self._log_stage(stage, self.loss(outputs, self.targets(batch)), outputs, batch)

    def _log_stage(
        self, stage: str, loss: torch.Tensor, outputs: torch.Tensor, batch: Batch
    ) -> None:
        per_step = stage == "train"
        metrics = self.stage_metrics(stage)
        options = {"on_step": per_step, "on_epoch": not per_step, "batch_size": len(batch[1])}
        # Under DDP, epoch values are averaged over the processes (a no-op on one device).
        options["sync_dist"] = not per_step
        self.log(f"{stage}/loss", loss, prog_bar=True, **options)
        if len(metrics):
            arguments = self.metric_arguments(outputs, batch)
            if per_step:
                metrics(**arguments)  # forward: this batch's values, which Lightning logs per step
            else:
                metrics.update(**arguments)  # computed (and synced) at the epoch's end
            self.log_dict(metrics, **options)
        # Lightning uses a metric called "step" as the x-axis: optimizer steps, not batches.
        self.log("step", float(self.global_step), **options)
