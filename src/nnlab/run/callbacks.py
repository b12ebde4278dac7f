"""The callbacks nnlab adds to every run, whatever conf/callbacks/ selects, and the one its
conf/callbacks/ names (LastCheckpoint). They read only what Lightning gives any module (the
loss `training_step` returns, the trainer's counters), so they hold for a module of yours as
for nnlab's tasks."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    ModelCheckpoint,
    ProgressBar,
    RichProgressBar,
)
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from torchmetrics import Metric

from nnlab import compat
from nnlab.errors import ConfigError, Diverged, Interrupted
from nnlab.run import layout
from nnlab.run.loaders import not_resumable
from nnlab.run.record import has_stage, write_atomically
from nnlab.run.resume import read, save_hparams_as_data
from nnlab.sweep.signals import STOP_SIGNALS
from nnlab.tasks.base import Task

log = logging.getLogger("nnlab")
NOT_METRICS = ("step", "epoch")  # Lightning's x-axis values, logged beside the metrics


def latest_metrics(trainer: L.Trainer) -> dict[str, float]:
    """Every scalar the module logged, at its latest value, as floats."""
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name not in NOT_METRICS and getattr(value, "numel", lambda: 1)() == 1
    }


class GracefulStop(Callback):
    """On Ctrl-C (SIGINT) or SIGTERM (a cluster's pre-emption), finish the batch under way, save
    `last.ckpt`, and stop with `Interrupted`, so that `ckpt_path=last` resumes the run exactly.

    The handler only takes note (work inside a signal handler could interrupt a half-written
    file), and the stop never goes through Lightning's `should_stop`, which would end the epoch
    early and validate once more. Lightning resumes a checkpoint taken between an epoch's last
    batch and its end as an epoch ended without its end hooks, so a signal there waits for the
    epoch's validation (else the next batch); one during the final validation waits for the
    end of training, when every value is logged. A second Ctrl-C stops at once. A sweep's jobs
    start with the signals blocked (nnlab.sweep.signals): unblocked while training, one that
    came earlier stops the run at its first batch.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.received: int | None = None
        self.epoch_ended = False
        self._previous: dict[int, Any] = {}
        self._blocked: set[int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():  # the only one with handlers
            self._previous = {s: signal.signal(s, self._take_note) for s in STOP_SIGNALS}
            self._blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _take_note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        batches, index = trainer.num_training_batches, args[-1]
        self.epoch_ended = index + 1 >= batches
        if batches == 1 or not self.epoch_ended:
            self._stop_if_asked(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates after on_train_batch_end: a signal that arrives then would
        # otherwise end fit as if its budget were spent, and the run would say "completed".
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        last_epoch = self.epoch_ended and trainer.current_epoch + 1 >= (trainer.max_epochs or 0) > 0
        at_the_end = trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step
        if fitting and not at_the_end and not last_epoch:
            self._stop_if_asked(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        self._stop_if_asked(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, _: Any) -> None:
        self._restore()

    def _stop_if_asked(self, trainer: L.Trainer) -> None:
        if self.received is not None:
            trainer.save_checkpoint(self.checkpoint, weights_only=False)
            raise Interrupted(self.received, trainer.global_step, self.checkpoint)

    def _restore(self) -> None:
        if self._blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._blocked)
            self._blocked = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class TrainingGuard(Callback):
    """Ends training where a run should end: on a NaN or infinite loss, naming its step, and at
    the step budget with a validation of the final weights (which ModelCheckpoint then saves).
    An epoch shorter than `trainer.log_every_n_steps` has its per-step values logged once an
    epoch, rather than never.

    It reads the loss `training_step` returns: a scalar for one optimizer step, or one value
    per step for a batch of several (nnlab's full-batch tasks); under manual optimization, when
    `training_step` returns nothing, the training losses the module logs (any key holding
    "loss" but a validation's or test's). The values are read back every
    `trainer.log_every_n_steps` batches (reading a value from a GPU makes the CPU wait for
    it), and always before a validation, whose checkpoint must not hold diverged weights, and
    at each epoch's end. Lightning stops at `max_steps` without validating when the budget
    ends between validations; stopping "early" at the budget makes it validate.
    `validated_at` is the step of the last validation: were the final weights validated?
    """

    def __init__(self) -> None:
        self.validated_at = -1
        self._losses: list[torch.Tensor] = []
        self._last_steps: list[int] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning writes per-step values every log_every_n_steps batches: an epoch shorter
        # than that (Lightning's default is 50) would never reach the loggers between epochs.
        epoch = trainer.num_training_batches
        if isinstance(epoch, int) and 0 < epoch < trainer.log_every_n_steps:
            trainer.log_every_n_steps = epoch

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None and not pl_module.automatic_optimization:  # what it logs as losses
            loss = _logged_training_loss(trainer)
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach().reshape(-1))
            self._last_steps.append(trainer.global_step)
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
        if trainer.should_stop or len(self._losses) >= max(1, trainer.log_every_n_steps):
            self._check(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            self.validated_at = trainer.global_step

    def _check(self, trainer: L.Trainer) -> None:
        if not self._losses:
            return
        steps = [
            step
            for losses, last in zip(self._losses, self._last_steps, strict=True)
            for step in range(last - len(losses) + 1, last + 1)
        ]
        losses = torch.cat(self._losses)
        self._losses, self._last_steps = [], []
        finite = torch.isfinite(losses)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            raise Diverged(
                steps[bad], "the training loss", float(losses[bad]), _last_saved(trainer)
            )


def _logged_training_loss(trainer: L.Trainer) -> torch.Tensor | None:
    """The sum of the training losses a module under manual optimization logs (a GAN's
    generator and discriminator losses): NaN or infinite when any of them is."""
    logged = [
        value.detach().reshape(())
        for name, value in trainer.callback_metrics.items()
        if "loss" in name and not name.startswith(("val", "test")) and value.numel() == 1
    ]
    return torch.stack(logged).sum() if logged else None


def _last_saved(trainer: L.Trainer) -> str | None:
    """The last.ckpt a ModelCheckpoint has written in this run, if any."""
    for callback in trainer.checkpoint_callbacks:
        for path in (callback.last_model_path, callback.best_model_path):
            if path and Path(path).name == layout.LAST_CHECKPOINT and Path(path).is_file():
                return path
    return None


class ResumeState(Callback):
    """What a resumed run needs beyond Lightning's own checkpoint.

    The running sums of the module's torchmetrics, in its state_dict. The values the module
    has logged, at their latest, across fit, validate and test (each of
    which starts Lightning's record anew): every checkpoint keeps them, so that a resumed run's
    metrics.json holds them all, those it does not log again included (a run stopped at its
    last step logs nothing more). And the training loaders' place in the epoch, which Lightning
    drops when the module read `trainer.estimated_stepping_batches` while configuring its
    optimizers (nnlab.compat): loaded at the start of training, before the loaders are read.
    """

    KEY = "nnlab_logged_metrics"

    def __init__(self) -> None:
        self.logged: dict[str, float] = {}

    def metrics(self, trainer: L.Trainer) -> dict[str, float]:
        self.logged |= latest_metrics(trainer)
        return dict(self.logged)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # A module's torchmetrics keep their running sums out of its state_dict by default:
        # kept in, a run resumed mid-epoch ends that epoch with the uninterrupted run's value
        # (torchmetrics loads them back, and a module built afresh loads such a checkpoint).
        for module in pl_module.modules():
            if isinstance(module, Metric):
                module.persistent(True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        compat.load_pending_loader_states(trainer)
        if trainer.ckpt_path:  # resumed: the values current at the checkpoint are current again
            # A stop at an epoch's validation resumes after it, where ModelCheckpoint judges the
            # epoch by its monitored value: without it, that epoch was never a best candidate.
            current = trainer.callback_metrics
            for name, value in self.logged.items():
                current.setdefault(name, torch.tensor(value))
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        if trainer.fit_loop.restarting and 0 < done < trainer.num_training_batches:
            for name in not_resumable(trainer):
                log.warning(
                    "Resuming mid-epoch: the training loader %s cannot take up its epoch where it "
                    "stopped (an IterableDataset without state_dict), so it starts it again: the "
                    "resumed run is not exact",
                    name,
                )

    def on_train_end(self, trainer: L.Trainer, _: Any) -> None:
        self.metrics(trainer)

    def on_validation_end(self, trainer: L.Trainer, _: Any) -> None:
        self.metrics(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, _: Any, checkpoint: dict) -> None:
        checkpoint[self.KEY] = self.metrics(trainer)
        save_hparams_as_data(checkpoint)  # loadable weights-only in any interpreter

    def on_load_checkpoint(self, trainer: L.Trainer, _: Any, checkpoint: dict) -> None:
        self.logged = dict(checkpoint.get(self.KEY, {}))


class MonitorChoice(Callback):
    """Gives every ModelCheckpoint and EarlyStopping configured with `monitor: auto` the
    validation loss the module logs: `val/loss`, else `val_loss`, else the first logged key
    that starts with "val" and holds "loss". Chosen at Lightning's sanity check, before
    training (else, for a module that logs nothing there, at the first validation), kept in
    the checkpoint, and so the same after a resume. A module that logs no validation loss
    stops there, before any checkpoint, with one line naming what it logs; a module that does
    not validate keeps no best.ckpt, and says so.
    """

    def __init__(self, resumes: Path | None = None) -> None:
        self.chosen: str | None = None
        self.resumes = resumes  # the checkpoint a resumed run starts from

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.resumes and self._waiting(trainer):  # as the run chose, before Lightning restores
            saved = read(self.resumes, "ckpt_path", mapped=True).get("callbacks", {})
            chosen = saved.get(self.state_key, {}).get("monitor")
            if chosen:
                self._choose(chosen, trainer)
        validates = trainer.limit_val_batches != 0 and has_stage(
            pl_module, trainer.datamodule, "validation_step", "val_dataloader"
        )
        if stage != TrainerFn.FITTING or validates or not self._waiting(trainer):
            return
        for callback in self._waiting(trainer):
            if isinstance(callback, EarlyStopping):
                reason = "the module does not validate: there is no validation loss to follow"
                raise ConfigError("callbacks.early_stopping.monitor", "auto", reason)
            callback.save_top_k = 0
        why = (
            "validation is off"
            if trainer.limit_val_batches == 0
            else "the module does not validate"
        )
        log.info("No best.ckpt: %s (last.ckpt holds the final weights)", why)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.chosen is not None or not self._waiting(trainer):
            return
        logged = [name for name in trainer.callback_metrics if name not in NOT_METRICS]
        losses = [n for n in logged if n.startswith("val") and "loss" in n]
        preferred = [n for n in ("val/loss", "val_loss") if n in logged]
        if not (preferred or losses):
            # nnlab's Task logs its loss only after the sanity check (a subclass may log more)
            if trainer.sanity_checking and (not logged or isinstance(pl_module, Task)):
                return
            named = next((n for n in logged if n.startswith("val")), "val_acc")
            scores = ("acc", "f1", "auc", "score", "precision", "recall")
            mode = "max" if any(s in named for s in scores) else "min"
            reason = (
                f"the module logs no validation loss to choose the best checkpoint by (it logs: "
                f"{', '.join(logged) or 'nothing'}); name one, e.g. "
                f"callbacks.model_checkpoint.monitor={named} callbacks.model_checkpoint.mode={mode}"
            )
            raise ConfigError("callbacks.model_checkpoint.monitor", "auto", reason)
        self._choose((preferred or losses)[0], trainer)

    def _choose(self, monitor: str, trainer: L.Trainer) -> None:
        self.chosen = monitor
        for callback in self._waiting(trainer):
            callback.monitor = monitor

    @staticmethod
    def _waiting(trainer: L.Trainer) -> list[Callback]:
        kinds = (ModelCheckpoint, EarlyStopping)
        return [c for c in trainer.callbacks if isinstance(c, kinds) and c.monitor == "auto"]

    def state_dict(self) -> dict[str, Any]:
        # Read back in `setup`, before Lightning restores the checkpoint: the other callbacks'
        # states are filed under their monitor's name.
        return {"monitor": self.chosen}


class LastCheckpoint(ModelCheckpoint):
    """Writes `last.ckpt` at every validation, and at the end of each epoch that validation
    skips (every epoch when validation is off), whatever the monitored value does.

    Lightning 2.6's `save_last` rewrites last.ckpt only when the monitored value improves, so
    after the last improvement it went stale: resuming lost steps and `nnlab-eval ckpt=last`
    tested old weights.
    """

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=Path(layout.LAST_CHECKPOINT).stem,
            monitor=None,
            enable_version_counter=False,
        )

    # It saves at epoch ends and validations, never every n steps: ModelCheckpoint's batch
    # hook would only return. Lightning skips a hook that is not callable (nnlab.compat).
    on_train_batch_end = None  # type: ignore[assignment]

    @property
    def state_key(self) -> str:  # distinct from any ModelCheckpoint's, one without monitor too
        return "LastCheckpoint"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        every = trainer.check_val_every_n_epoch
        skipped = every and every > 1 and (trainer.current_epoch + 1) % every
        if skipped or not sum(trainer.num_val_batches):  # or no validation at all
            trainer.save_checkpoint(Path(self.dirpath) / layout.LAST_CHECKPOINT)


class WholeCheckpoints(TorchCheckpointIO):
    """Every checkpoint written whole or not at all: to a temporary name beside it, then renamed
    over the old one. Lightning's own writer opens the file for writing first, so a full disk
    left `last.ckpt` empty and the run's progress lost with it."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        save = super().save_checkpoint
        write_atomically(Path(path), lambda partial: save(checkpoint, partial, storage_options))


def progress_bar(trainer_settings: dict[str, Any]) -> ProgressBar:
    """nnlab's bar for a budget of optimizer steps, Lightning's Rich bar for an epoch budget.

    Lightning's bars count batches within an epoch: with `trainer.max_steps` as the budget and
    no epoch limit (the rings, the wave, the series) that says nothing, and a full-batch task's
    epoch is one batch (its bar read `Epoch 99/-2 1/1`)."""
    steps = trainer_settings.get("max_steps") or -1
    epochs = trainer_settings.get("max_epochs")
    console = console_settings()
    if steps > 0 and epochs in (None, -1):
        return StepProgressBar(console)
    return RichProgressBar(console_kwargs=console)


def console_settings() -> dict[str, Any]:
    """Rich draws a live bar in Jupyter with ipywidgets; without them it warned at every run
    (`install "ipywidgets" for Jupyter support`). There the bar is drawn as text instead."""
    import importlib.util

    if Console().is_jupyter and importlib.util.find_spec("ipywidgets") is None:
        return {"force_jupyter": False}
    return {}


class StepProgressBar(ProgressBar):
    """One bar from step 0 (or where a resumed run stopped) to `trainer.max_steps`, with the
    values logged for the bar (`prog_bar=True`). Validation and testing have no bar of their
    own: they are short beside training, and the summary reports them."""

    def __init__(self, console_settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.enabled = True
        self.progress: Progress | None = None
        self.console_settings = console_settings or {}

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
            console=Console(**self.console_settings),
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
