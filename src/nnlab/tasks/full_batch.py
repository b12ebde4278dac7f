"""Tasks whose one training batch is the whole training set: the notebook's rings and wave.

Their networks have a few dozen weights: a full-batch Adam step takes 0.45 ms, and Lightning's
work around a batch (fetching it, a dozen hooks, the closure) costs about as much again, so
step for step Lightning ran them 2x slower than the notebook's loop (`make bench`). Seeing the
same batch at every step, they take `steps_per_batch` steps on each one, through Lightning's
public manual optimization, and pay that work once per batch. `steps_per_batch: 1` makes
them ordinary tasks again, where the Trainer steps the optimizer: its gradient clipping and
accumulation need that (Lightning refuses them under manual optimization, saying so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric

from nnlab.checks import check_int
from nnlab.tasks.base import Batch, Task


class FullBatchTask(Task):
    """A Task that takes `steps_per_batch` optimizer steps on each training batch. Every step
    counts in `global_step` and `max_steps`; the train metrics describe the batch at the last
    step of each; `training_step` returns every step's loss, which nnlab's NaN check reads."""

    def __init__(
        self,
        network: nn.Module | Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        lr_schedule: str = "constant",
        steps_per_batch: int = 100,
        metrics: Mapping[str, Metric] | None = None,
    ) -> None:
        super().__init__(network, optimizer, lr_schedule, metrics)
        self.steps_per_batch = check_int("steps_per_batch", steps_per_batch, minimum=1)
        self.automatic_optimization = self.steps_per_batch == 1

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        steps = self.steps_per_batch
        if self.trainer.max_steps > 0:  # the budget may end inside this batch
            steps = min(steps, self.trainer.max_steps - self.global_step)
        losses: list[torch.Tensor] = []
        step: dict[str, Any] = {}  # the closure's last evaluation

        def closure() -> torch.Tensor:  # an optimizer such as LBFGS evaluates it several times
            step["loss"], step["inputs"] = self.model_step(batch)
            optimizer.zero_grad()
            self.manual_backward(step["loss"])
            return step["loss"]

        for _ in range(steps):
            optimizer.step(closure=closure)
            if scheduler is not None:
                scheduler.step()
            losses.append(step["loss"].detach())
        self.train_metrics.update(value=losses[-1], weight=len(batch[0]), **step["inputs"])
        return torch.stack(losses)

    def total_steps(self) -> int:
        if self.automatic_optimization:
            return super().total_steps()
        budget = [self.trainer.max_steps] if self.trainer.max_steps > 0 else []
        if self.trainer.max_epochs and self.trainer.max_epochs > 0:  # one batch an epoch
            budget.append(self.trainer.max_epochs * self.steps_per_batch)
        return min(budget) if budget else super().total_steps()
