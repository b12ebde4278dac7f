"""The progress bar of a budget of optimizer steps: `2,300/10,000 steps · 1,850 steps/s`.

Lightning's bars count batches within an epoch. With `trainer.max_steps` as the budget and no
epoch limit (the rings, the wave, the series) that says nothing: a full-batch task's epoch is
one batch, so its bar read `Epoch 99/-2 1/1`. Epoch budgets keep Lightning's own Rich bar.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(trainer_settings: dict[str, Any]) -> ProgressBar:
    """nnlab's bar for a step budget, Lightning's Rich bar for an epoch budget."""
    steps = trainer_settings.get("max_steps") or -1
    epochs = trainer_settings.get("max_epochs")
    return StepProgressBar() if steps > 0 and epochs in (None, -1) else RichProgressBar()


class StepProgressBar(ProgressBar):
    """One bar from step 0 (or where a resumed run stopped) to `trainer.max_steps`, with the
    values logged for the bar (`prog_bar=True`). Validation and testing have no bar of their
    own: they are short beside training, and the summary reports them."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True
        self.progress: Progress | None = None

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled:
            return
        self.progress = Progress(
            TextColumn("Training"),
            BarColumn(bar_width=20),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=Console(),
        )
        total, done = trainer.max_steps, trainer.global_step
        self.progress.add_task("", total=total, completed=done, speed="", metrics="")
        self.progress.start()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *_: Any) -> None:
        self._show(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show(trainer, pl_module)
        self.on_exception(trainer, pl_module, None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, _: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _show(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.progress is None:
            return
        metrics = self.get_metrics(trainer, pl_module)
        shown = "  ".join(
            f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
            for name, value in metrics.items()
            if name != "v_num"
        )
        room = max(0, self.progress.console.width - 80)  # the metrics get what the columns leave
        shown = shown if len(shown) <= room else shown[: max(0, room - 1)] + "…"
        speed = self.progress.tasks[0].speed
        self.progress.update(
            self.progress.task_ids[0],
            completed=trainer.global_step,
            speed=f"{speed:,.0f} steps/s" if speed else "",
            metrics=shown,
        )
