"""The training path every task shares: optimizer steps, metrics and logging, in one place."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn
from torchmetrics import MetricCollection

from nnlab.config import check_float, check_int
from nnlab.errors import Diverged

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Batch = tuple[torch.Tensor, torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
STAGES = ("train", "val", "test")


class Task(L.LightningModule, ABC):
    """A network, its loss and its metrics, trained by `steps_per_batch` optimizer steps per batch.

    Lightning's per-batch machinery (hooks, logging, progress bar, data fetching) costs about
    as much as a whole optimizer step of the notebook's tiny full-batch networks. Running several
    steps inside one `training_step` (manual optimization) pays it once per `steps_per_batch`
    steps; mini-batch tasks keep `steps_per_batch=1`. `trainer.max_steps` still counts optimizer
    steps, and the last batch is cut short so that the budget is met exactly.

    Lightning also runs five hooks around every backward and optimizer step, about 0.1 ms in
    all: a quarter of the notebook's step. So when nothing needs them (one process, no gradient
    scaling), all but the last step of a batch are plain `loss.backward()` and
    `optimizer.step()` calls; the last goes through Lightning, so callbacks see one step per
    batch, as they see everything else. Under DDP or fp16 every step goes through Lightning,
    which syncs and scales the gradients.

    Metrics are logged as `<stage>/<name>` (`train/loss`, `val/acc`, ...) against the optimizer
    step. Train values describe the last step of each batch; val and test values the whole split.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerFactory = torch.optim.Adam,
        steps_per_batch: int = 1,
        gradient_clip_val: float | None = None,
    ) -> None:
        super().__init__()
        # The task's own arguments go into checkpoints and hparams.yaml; the run's whole
        # config is in .hydra/config.yaml.
        self.save_hyperparameters(ignore=["network", "optimizer"])
        self.automatic_optimization = False
        self.network = network
        self.make_optimizer = optimizer
        self.steps_per_batch = check_int("steps_per_batch", steps_per_batch, minimum=1)
        self.gradient_clip_val = (
            None
            if gradient_clip_val is None
            else check_float("gradient_clip_val", gradient_clip_val, above=0)
        )
        # As attributes (train_metrics, ...) so that Lightning moves them with the module.
        for stage in STAGES:
            setattr(self, f"{stage}_metrics", self.make_metrics().clone(prefix=f"{stage}/"))
        self.last_validated_step = -1
        self._plain_inner_steps = False

    # What each task defines.

    @abstractmethod
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The scalar training loss of the network's raw outputs."""

    @abstractmethod
    def make_metrics(self) -> MetricCollection:
        """The torchmetrics computed on every stage, keyed by their names without the stage."""

    @abstractmethod
    def metric_arguments(self, outputs: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """Keyword arguments for the metrics' `update` (`preds`, `target`, and any extras)."""

    def figures(self, datamodule: L.LightningDataModule) -> dict[str, Figure]:
        """Figures of the trained network, by file name (without `.png`)."""
        return {}

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

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(self.network.parameters())

    def on_train_start(self) -> None:
        trainer = self.trainer
        self._plain_inner_steps = isinstance(trainer.strategy, SingleDeviceStrategy) and (
            getattr(trainer.precision_plugin, "scaler", None) is None
        )

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        inputs, targets = batch
        optimizer = self.optimizers()
        steps = self._steps_for_this_batch()
        first_step = self.global_step + 1
        losses = []
        for step in range(steps):
            outputs = self.network(inputs)
            loss = self.loss(outputs, targets)
            optimizer.zero_grad()
            plain = self._plain_inner_steps and step < steps - 1
            loss.backward() if plain else self.manual_backward(loss)
            if self.gradient_clip_val is not None:  # by norm, as Lightning's own option does
                self.clip_gradients(optimizer, self.gradient_clip_val, "norm")
            if plain:
                optimizer.optimizer.step()
                self._count_plain_step()
            else:
                optimizer.step()
            losses.append(loss.detach())
            if self.trainer.should_stop:  # a stop signal or callback: end after this step
                break
        self._check_finite(torch.stack(losses), first_step)
        self._log_stage("train", losses[-1], outputs.detach(), batch)
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

    def _steps_for_this_batch(self) -> int:
        max_steps = self.trainer.max_steps
        if max_steps is None or max_steps < 0:
            return self.steps_per_batch
        return max(1, min(self.steps_per_batch, max_steps - self.global_step))

    def _evaluate(self, stage: str, batch: Batch) -> None:
        inputs, targets = batch
        outputs = self.network(inputs)
        self._log_stage(stage, self.loss(outputs, targets), outputs, batch)

    def _log_stage(
        self, stage: str, loss: torch.Tensor, outputs: torch.Tensor, batch: Batch
    ) -> None:
        per_step = stage == "train"
        metrics = self.stage_metrics(stage)
        arguments = self.metric_arguments(outputs, batch)
        if per_step:
            metrics(**arguments)  # forward: this batch's values, which Lightning logs per step
        else:
            metrics.update(**arguments)  # Lightning computes (and syncs) them at the epoch's end
        options = {"on_step": per_step, "on_epoch": not per_step, "batch_size": len(batch[1])}
        self.log(f"{stage}/loss", loss, prog_bar=True, **options)
        self.log_dict(metrics, **options)
        # Lightning uses a metric called "step" as the x-axis: optimizer steps, not batches.
        self.log("step", float(self.global_step), **options)
