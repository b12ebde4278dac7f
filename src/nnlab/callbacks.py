"""The callbacks nnlab adds to every run, whatever conf/callbacks/ selects: they work with any
LightningModule, nnlab's own or a user's."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from nnlab.errors import Diverged, Interrupted
from nnlab.internals import load_pending_loader_states

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop(Callback):
    """On Ctrl-C (SIGINT) or SIGTERM (a cluster's pre-emption), finish the current batch, save
    `last.ckpt`, and stop with `Interrupted`, so that `ckpt_path=last` resumes the run.

    The handler only takes note: doing the work inside a signal handler could interrupt a
    half-written file. The stop comes at the end of the batch under way (or of the validation),
    never through Lightning's `should_stop` between batches, which would end the epoch early
    and validate once more, so that a resumed run would differ from one never stopped. A second
    Ctrl-C stops at once, with Python's KeyboardInterrupt. In a sweep's job the signals arrive
    blocked (nnlab.sweeps): they are unblocked while training, so one that came earlier stops
    the run at its first batch.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.received: int | None = None
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}
        self._blocked: set[int] | None = None
        self._in_batch = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        self._trainer = trainer
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._request_stop)
        self._blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self._in_batch and self._trainer is not None:
            # A batch of several steps (nnlab.tasks.steps_per_batch) ends after the current one.
            self._trainer.should_stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._in_batch = True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, index: int
    ) -> None:
        self._in_batch = False
        # Not after the last of an epoch's several batches: Lightning resumes a checkpoint
        # taken before the epoch's end (its validation, its metrics) as an epoch ended without
        # it, and the run then differed from one never stopped. The stop comes at the epoch's
        # validation, else after the next epoch's first batch, else at the end of training.
        # (An epoch of one batch, the full-batch tasks', stops here as before.)
        batches = trainer.num_training_batches
        if batches == 1 or index + 1 < batches:
            self._stop_if_requested(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning validates after on_train_batch_end: a signal that arrives then would
        # otherwise end fit as if its budget were spent, and the run would say "completed".
        if trainer.state.fn == TrainerFn.FITTING:
            self._stop_if_requested(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()
        self._stop_if_requested(trainer)

    def _stop_if_requested(self, trainer: L.Trainer) -> None:
        if self.received is not None:
            trainer.save_checkpoint(self.checkpoint, weights_only=False)
            raise Interrupted(self.received, trainer.global_step, self.checkpoint)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, error: BaseException
    ) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._blocked)
            self._blocked = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class ResumedLoaderState(Callback):
    """A resumed run's training DataLoaders take up the epoch where the checkpoint left it.

    Lightning keeps a stateful loader's `state_dict` in checkpoints, but drops it on resume
    when the module read `trainer.estimated_stepping_batches` while configuring its
    optimizers (the built-in tasks' cosine schedule does). Loading it at the start of training
    is in time: loaders are first iterated after that.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        load_pending_loader_states(trainer)


class LastCheckpoint(ModelCheckpoint):
    """Writes `last.ckpt` at every validation, and at the end of each epoch that validation
    skips, whatever the monitored value does.

    Lightning 2.6's `save_last` rewrites last.ckpt only when the monitored value improves, so
    after the last improvement it went stale: resuming lost steps and nnlab-eval ckpt=last
    tested old weights.
    """

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="last",
            monitor=None,
            save_top_k=1,
            enable_version_counter=False,
        )

    @property
    def state_key(self) -> str:
        # Distinct from a ModelCheckpoint's, even one that monitors nothing either.
        return "LastCheckpoint"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # With validation every few epochs (check_val_every_n_epoch > 1), ModelCheckpoint saves
        # at validations only: last.ckpt would miss the epochs between, the last ones included.
        every = trainer.check_val_every_n_epoch
        if every and every > 1 and (trainer.current_epoch + 1) % every:
            trainer.save_checkpoint(Path(self.dirpath) / "last.ckpt")


class TrainingGuard(Callback):
    """Ends training where a run should end: on a NaN or infinite loss, naming its step, and at
    the step budget with a validation of the final weights (which ModelCheckpoint then saves).

    The losses `training_step` returns are checked every `trainer.log_every_n_steps` batches
    (reading a value back from a GPU makes the CPU wait for it, so not at every batch), and
    always before a validation, whose checkpoint must not hold diverged weights, before a stop
    and at the end of each epoch. Lightning itself stops at `max_steps` without validating when
    the budget ends between validations; stopping "early" at the budget makes it validate.
    `validated_at` is the step of the last validation: were the final weights validated?
    """

    def __init__(self) -> None:
        self.validated_at = -1
        self._losses: list[torch.Tensor] = []
        self._steps: list[int] = []

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        step = trainer.global_step
        if isinstance(loss, torch.Tensor):
            self._losses.append(loss.detach())
            self._steps.append(step)
        if 0 < trainer.max_steps <= step:
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
        if self._losses:
            losses = torch.cat([loss.reshape(1) for loss in self._losses])
            steps = self._steps
            self._losses, self._steps = [], []
            check_finite(losses, steps, trainer)


def check_finite(losses: torch.Tensor, steps: list[int], trainer: L.Trainer) -> None:
    """Raise Diverged at the first NaN or infinite value of `losses`, the losses of `steps`
    (optimizer steps, counted from 1), naming the last checkpoint saved before it."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return
    bad = int((~finite).nonzero()[0])
    raise Diverged(steps[bad], "train/loss", float(losses[bad]), last_saved(trainer))


def last_saved(trainer: L.Trainer) -> str | None:
    """The last.ckpt a ModelCheckpoint has written in this run, if any."""
    for callback in trainer.checkpoint_callbacks:
        for path in (callback.last_model_path, callback.best_model_path):
            if path and Path(path).name == "last.ckpt" and Path(path).is_file():
                return path
    return None
