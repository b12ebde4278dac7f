"""Callbacks nnlab adds to every run, whatever conf/callbacks/ selects."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from nnlab.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop(Callback):
    """On Ctrl-C (SIGINT) or SIGTERM (a cluster's pre-emption), finish the current optimizer step,
    save `last.ckpt`, and stop with `Interrupted`, so `ckpt_path=last` can resume the run.

    The handler only sets `trainer.should_stop`, which the task checks after each optimizer
    step: doing the work inside a signal handler could interrupt a half-written file. A second
    Ctrl-C stops at once, with Python's KeyboardInterrupt.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.received: int | None = None
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers
        self._trainer = trainer
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._request_stop)

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self._trainer is not None:
            self._trainer.should_stop = True
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
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
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
