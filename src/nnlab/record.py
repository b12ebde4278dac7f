"""How a run, or an eval of one, ends: tested, analysed, and recorded however it stops.

`nnlab.train.train` and `nnlab.eval.evaluate` both finish through here, so a run dir and an
eval dir hold the same files, and metrics.json says the same things about how each ended.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from nnlab import outputs
from nnlab.errors import DISK_FULL, DiskFull, RunStopped
from nnlab.runtime import DETAILS, is_multirun

if TYPE_CHECKING:  # imported where used: `recording` starts before Lightning is loaded
    import lightning as L

    from nnlab.run import Run

log = logging.getLogger("nnlab")
NOT_METRICS = ("step", "epoch")  # Lightning's x-axis values, logged beside the metrics


@dataclass
class Record:
    """What `recording` writes when the block ends: the metrics so far, and the run once built."""

    metrics: dict[str, float] = field(default_factory=dict)
    run: Run | None = None
    tags: list[str] = field(default_factory=list)
    note: str = ""  # after the status: how a completed run ended (stopped early at ...)
    resuming: bool = False  # the run resumes from a checkpoint of its own (ckpt_path=)
    resumed_from: int | None = None  # that checkpoint's step, once checked

    def left_as_it_was(self, status: str) -> bool:
        """A resume that ends before its first new step leaves the run's record as it was:
        interrupted, and resumable again."""
        if not self.resuming or status == "completed":
            return False
        trainer = self.run.trainer if self.run is not None else None
        if trainer is None or self.resumed_from is None:
            return True
        return trainer.global_step <= self.resumed_from


def latest_metrics(trainer: L.Trainer) -> dict[str, float]:
    """Every scalar the module logged, at its latest value, as floats."""
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name not in NOT_METRICS and getattr(value, "numel", lambda: 1)() == 1
    }


def early_stop_note(trainer: L.Trainer) -> str:
    """` (stopped early at step N: val/loss did not improve for K checks)` when an
    EarlyStopping callback ended the run; empty otherwise."""
    from lightning.pytorch.callbacks import EarlyStopping

    for callback in trainer.callbacks:
        if isinstance(callback, EarlyStopping) and callback.wait_count >= callback.patience > 0:
            checks = f"{callback.wait_count} check{'s' * (callback.wait_count != 1)}"
            return (
                f" (stopped early at step {trainer.global_step}: {callback.monitor} did not "
                f"improve for {checks})"
            )
    return ""


def has_stage(run: Run, step: str, loader: str) -> bool:
    """Whether the module defines `step` (test_step) and the data `loader` (test_dataloader)."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    return is_overridden(step, run.task) and is_overridden(loader, run.datamodule)


def test_and_analyse(run: Run, out_dir: Path) -> dict[str, float]:
    """Test the weights in memory, then, on rank 0, the module's `analyse` if it has one: its
    figures, tables and arrays go to `out_dir` and TensorBoard. Returns the metrics."""
    trainer, task, datamodule = run.trainer, run.task, run.datamodule
    metrics: dict[str, float] = {}
    if has_stage(run, "test_step", "test_dataloader"):
        trainer.test(task, datamodule=datamodule, verbose=False)
        metrics = latest_metrics(trainer)
    else:
        log.info("No test: %s has no test_step or no test_dataloader", type(task).__name__)
    analyse = getattr(task, "analyse", None)
    if trainer.is_global_zero and callable(analyse):
        analysis = analyse(datamodule)
        outputs.save_analysis(analysis, out_dir, trainer.loggers, trainer.global_step)
        metrics.update(analysis.metrics | analysis.breakdown)
    return metrics


def _log_ending(
    title: str, status: str, metrics: dict[str, float], out_dir: Path, seconds: float
) -> None:
    """How the run ended, its metrics and where it lives, as the last lines of train.log."""
    details = logging.getLogger(DETAILS)
    details.info("%s: %s in %.1f s; run dir %s", title, status, seconds, out_dir)
    for name, value in sorted(metrics.items()):
        details.info("  %-24s %.6g", name, value)


@contextmanager
def recording(out_dir: Path, title: str, note: str = "") -> Iterator[Record]:
    """metrics.json in `out_dir` however the block ends, its `status` saying how (plus `note`),
    TensorBoard's HPARAMS entry and files flushed, and the summary when it completes. Under
    DDP, rank 0 writes for every process."""
    record = Record()
    started = time.perf_counter()
    earlier_events = outputs.event_files(out_dir)
    status = "failed"
    try:
        yield record
        status = "completed"
    except RunStopped as error:
        status = error.status
        raise
    except OSError as error:
        if error.errno not in DISK_FULL:
            status = f"failed: {type(error).__name__}: {error}".splitlines()[0]
            raise
        full = DiskFull.from_os_error(error)
        status = full.status
        raise full from error
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise
    except Exception as error:
        status = f"failed: {type(error).__name__}: {error}".splitlines()[0]
        raise
    finally:
        try:
            _finish(record, status, note, out_dir, title, started, earlier_events)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            if status != "completed":  # already stopping: its own message says more
                log.warning("nnlab: no space left to write %s either", error.filename or out_dir)
            else:  # the results could not all be written: the run did not complete
                full = DiskFull.from_os_error(error)
                with contextlib.suppress(OSError):
                    outputs.write_metrics(out_dir, record.metrics, full.status, record.tags)
                raise full from error


def _finish(
    record: Record,
    status: str,
    note: str,
    out_dir: Path,
    title: str,
    started: float,
    earlier: set[Path],
) -> None:
    """What `recording` writes when its block ends with `status`."""
    run = record.run
    trainer = run.trainer if run is not None else None
    completed = status == "completed"
    if trainer is not None and not completed:  # the latest values, for the report
        record.metrics = {**latest_metrics(trainer), **record.metrics}
    if record.left_as_it_was(status):
        if trainer is not None:  # and without this attempt's event files
            outputs.close_writers(trainer.loggers, keep_only=earlier)
        logging.getLogger(DETAILS).info(
            "The resume ended before its first step (%s): the run is left as it was", status
        )
        return
    if trainer is not None and not trainer.is_global_zero:
        return
    ending = status + (record.note if completed else "") + note
    outputs.write_metrics(out_dir, record.metrics, ending, record.tags)
    if trainer is not None:
        if not hasattr(run.task, "metric_names"):  # no names to register up front
            outputs.log_hparams(trainer.loggers, run.cfg, sorted(record.metrics))
        outputs.close_writers(trainer.loggers, keep_empty=completed)
    seconds = time.perf_counter() - started
    _log_ending(title, ending, record.metrics, out_dir, seconds)
    if completed:
        logged = trainer is not None and bool(outputs.tensorboard_writers(trainer.loggers))
        outputs.print_summary(
            title, ending, record.metrics, out_dir, seconds, is_multirun(), logged
        )
