"""How a run, or an eval of one, ends: tested, analysed, and recorded however it stops.

`nnlab.train.train` and `nnlab.eval.evaluate` both finish through here, so a run dir and an
eval dir hold the same files, and metrics.json says the same things about how each ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from nnlab import outputs
from nnlab.errors import RunStopped
from nnlab.run import Run
from nnlab.runtime import is_multirun


@dataclass
class Record:
    """What `recording` writes when the block ends: the metrics so far, and the run once built."""

    metrics: dict[str, float] = field(default_factory=dict)
    run: Run | None = None


def latest_metrics(run: Run) -> dict[str, float]:
    """The task's metrics among the trainer's latest values, as floats."""
    latest = run.trainer.callback_metrics
    return {name: float(latest[name]) for name in run.task.metric_names if name in latest}


def test_and_analyse(run: Run, out_dir: Path, ckpt_path: str | None = None) -> dict[str, float]:
    """Test the weights in memory (or `ckpt_path`'s), then, on rank 0, the task's analysis:
    its figures, tables and arrays go to `out_dir` and TensorBoard. Returns the metrics."""
    trainer, task, datamodule = run.trainer, run.task, run.datamodule
    trainer.test(task, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    metrics = latest_metrics(run)
    if trainer.is_global_zero:
        analysis = task.analyse(datamodule)
        outputs.save_analysis(analysis, out_dir, trainer.loggers, trainer.global_step)
        metrics.update(analysis.metrics)
    return metrics


@contextmanager
def recording(out_dir: Path, title: str, note: str = "") -> Iterator[Record]:
    """metrics.json in `out_dir` however the block ends, its `status` saying how (plus `note`),
    and the summary when it completes. Under DDP, rank 0 writes for every process."""
    record = Record()
    started = time.perf_counter()
    status = "failed"
    try:
        yield record
        status = "completed"
    except RunStopped as error:
        status = error.status
        raise
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise
    except Exception as error:
        status = f"failed: {type(error).__name__}: {error}".splitlines()[0]
        raise
    finally:
        run = record.run
        if run is not None and status != "completed":  # the latest values, for the report
            record.metrics.update(latest_metrics(run))
        if run is None or run.trainer.is_global_zero:
            outputs.write_metrics(out_dir, record.metrics, status + note)
            if status == "completed":
                seconds = time.perf_counter() - started
                logged = run is not None and bool(outputs.tensorboard_writers(run.trainer.loggers))
                outputs.print_summary(
                    title, status, record.metrics, out_dir, seconds, is_multirun(), logged
                )
