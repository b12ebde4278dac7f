"""A progress bar for budgets of optimizer steps: `2,300/10,000 steps · 1,850 steps/s`.

Lightning's bars count batches within an epoch. With `trainer.max_steps` as the budget and no
epoch limit (the rings, the wave, the series) that says nothing: a full-batch task's epoch is one
batch, so its bar read `Epoch 99/-2 1/1`. Epoch budgets keep Lightning's own Rich bar.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Column
from rich.text import Text

# The columns before the metrics take this many characters; the metrics get the rest of a line.
FIXED_WIDTH = 80


def progress_bar(trainer_settings: dict[str, Any]) -> ProgressBar:
    """nnlab's bar for a step budget, Lightning's Rich bar for an epoch budget."""
    steps = trainer_settings.get("max_steps") or -1
    epochs = trainer_settings.get("max_epochs")
    return StepProgressBar() if steps > 0 and epochs in (None, -1) else RichProgressBar()


def _fixed(width: int) -> Column:
    return Column(no_wrap=True, min_width=width)


class _Speed(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.0f} steps/s" if task.speed else "", style="progress.data.speed")


class StepProgressBar(ProgressBar):
    """One bar from step 0 (or where a resumed run stopped) to `trainer.max_steps`, with the
    metrics logged for the bar (`prog_bar=True`). Validation and testing show no bar of their
    own: they are short beside training, and the summary reports them."""

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._progress: Progress | None = None
        self._task: Any = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._enabled:
            return
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps", table_column=_fixed(20)),
            _Speed(table_column=_fixed(16)),
            TimeElapsedColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=Console(),
        )
        self._task = self._progress.add_task(
            "Training", total=trainer.max_steps, completed=trainer.global_step, metrics=""
        )
        self._progress.start()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        self._show(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._show(trainer, pl_module)
        self._stop()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException
    ) -> None:
        self._stop()

    def _show(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._progress is None:
            return
        metrics = self.get_metrics(trainer, pl_module)
        shown = "  ".join(
            f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
            for name, value in metrics.items()
            if name != "v_num"
        )
        room = max(0, self._progress.console.width - FIXED_WIDTH)  # rather than dropping columns
        shown = shown if len(shown) <= room else shown[: max(0, room - 1)] + "…"
        self._progress.update(self._task, completed=trainer.global_step, metrics=shown)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
