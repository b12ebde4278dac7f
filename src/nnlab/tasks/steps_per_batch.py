"""The one speed opt-in: several optimizer steps on each training batch, for full-batch tasks.

The notebook's rings and wave networks have a few dozen weights; one full-batch Adam step
takes 0.45 ms. Lightning's work around a batch (fetching it, a dozen hooks, the closure)
costs about as much again, so step-for-step Lightning ran the rings 2x slower than the
notebook's loop (measured; `make bench`). A full-batch task sees the same batch at every step,
so it can take `steps_per_batch` steps on each one and pay that work once per batch.

How a batch goes: Lightning calls `optimizer_step` as usual; this class first takes
`steps_per_batch - 1` plain steps on the batch (`model_step`, backward, the Trainer's gradient
clipping, the optimizer's step, step-interval schedulers), then lets Lightning take the last one
with its own closure: `training_step`, its hooks and callbacks, and the train metrics, which so
describe the full batch at that step. Every step counts in `global_step` and `max_steps`.

Every Trainer option keeps its meaning or is refused before training, naming the setting:
`val_check_interval` and `log_every_n_steps` count batches (of `steps_per_batch` steps);
gradient clipping applies to every step; accumulation, DDP, fp16 gradient scaling, optimizers
that need a closure and schedulers stepped other than once per step are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import nn

from nnlab.callbacks import check_finite
from nnlab.checks import check_int
from nnlab.errors import ConfigError
from nnlab.internals import count_optimizer_step
from nnlab.tasks.base import Batch, Task, needs_closure

KEY = "task.steps_per_batch"


class StepsPerBatch(Task):
    """A Task that takes `steps_per_batch` optimizer steps on each training batch.

    With `steps_per_batch: 1` it is an ordinary Task, and every Trainer option applies.
    """

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        lr_schedule: str = "constant",
        steps_per_batch: int = 100,
    ) -> None:
        super().__init__(network, optimizer, lr_schedule)
        self.steps_per_batch = check_int("steps_per_batch", steps_per_batch, minimum=1)
        self._batch: Batch | None = None

    def on_fit_start(self) -> None:
        if self.steps_per_batch > 1:
            self._refuse_what_plain_steps_cannot_honour()

    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        self._batch = batch  # optimizer_step is not given the batch

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        if self.steps_per_batch > 1:
            self._plain_steps(optimizer)
        optimizer.step(closure=optimizer_closure)  # Lightning's own step: training_step, hooks

    def steps_per_epoch(self) -> int:
        return super().steps_per_epoch() * self.steps_per_batch

    def _plain_steps(self, optimizer: Any) -> None:
        """All but the last step of this batch, without Lightning's per-step machinery."""
        trainer = self.trainer
        steps = self.steps_per_batch - 1
        if trainer.max_steps > 0:  # the budget may end inside this batch
            steps = min(steps, trainer.max_steps - trainer.global_step - 1)
        schedulers = [c.scheduler for c in trainer.lr_scheduler_configs if c.interval == "step"]
        clip = trainer.gradient_clip_val
        first_step, losses = trainer.global_step + 1, []
        for _ in range(steps):
            with trainer.precision_plugin.train_step_context():
                loss, _ = self.model_step(self._batch)
            optimizer.zero_grad()
            loss.backward()
            if clip:
                self.configure_gradient_clipping(optimizer, clip, trainer.gradient_clip_algorithm)
            optimizer.optimizer.step()
            count_optimizer_step(trainer)
            for scheduler in schedulers:
                scheduler.step()
            losses.append(loss.detach())
            if trainer.should_stop:  # a stop signal: end after this step
                break
        if losses:  # checked once per batch: reading a value back from a GPU waits for it
            steps = list(range(first_step, first_step + len(losses)))
            check_finite(torch.stack(losses), steps, trainer)

    def _refuse_what_plain_steps_cannot_honour(self) -> None:
        trainer = self.trainer
        instead = f"or set {KEY}=1 to take one step per batch"
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                "trainer.accumulate_grad_batches",
                trainer.accumulate_grad_batches,
                f"a batch here is the whole training set: nothing to accumulate ({instead})",
            )
        if not isinstance(trainer.strategy, SingleDeviceStrategy):
            raise ConfigError(
                "trainer.strategy",
                type(trainer.strategy).__name__,
                f"{KEY}={self.steps_per_batch} steps outside Lightning's strategy, which DDP "
                f"must see; use {KEY}=1 under DDP",
            )
        if getattr(trainer.precision_plugin, "scaler", None) is not None:
            raise ConfigError(
                "trainer.precision",
                trainer.precision,
                f"fp16 gradient scaling happens inside Lightning's step; use bf16-mixed, {instead}",
            )
        for optimizer in trainer.optimizers:
            if needs_closure(optimizer):
                raise ConfigError(
                    "optimizer._target_",
                    type(optimizer).__name__,
                    f"needs a closure at each step, which the plain steps do not pass; {instead}",
                )
        for config in trainer.lr_scheduler_configs:
            if config.interval == "step" and (config.frequency != 1 or config.monitor):
                raise ConfigError(
                    "task.lr_schedule",
                    type(config.scheduler).__name__,
                    f"a step-interval scheduler must step at every step, unmonitored; {instead}",
                )
