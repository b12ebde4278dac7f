"""What a run leaves, however it ends: metrics.json with its `status`, the figures, tables and
arrays of its analysis, TensorBoard's HPARAMS entry, the last lines of train.log, and the
summary on the console. nnlab-train and nnlab-eval both finish through `recording`, so a run
dir and an eval dir hold the same files.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from nnlab.errors import DISK_FULL, DiskFull, stopped
from nnlab.run import layout, trackers
from nnlab.run.console import DETAILS
from nnlab.sweep.devices import DEVICES, JOB_DEVICE

if TYPE_CHECKING:  # imported where used: metrics.json is written before Lightning is loaded
    from nnlab.train import Run

log = logging.getLogger("nnlab")
HPARAM_GROUPS = ("data", "model", "task", "optimizer")  # the config nodes shown in HPARAMS
EVENT_FILES = "events.out.tfevents.*"


@dataclass
class Record:
    """What `recording` writes when its block ends: the metrics so far, and the run once built."""

    metrics: dict[str, float] = field(default_factory=dict)
    run: Run | None = None
    note: str = ""  # after a completed run's status: stopped early at ...
    resuming: bool = False  # the run resumes from a checkpoint of its own (ckpt_path=)
    resumed_from: int | None = None  # that checkpoint's step, once checked

    def left_as_it_was(self, status: str) -> bool:
        """A resume that ends before its first new step leaves the run as it was: interrupted,
        and resumable again."""
        if not self.resuming or status == "completed":
            return False
        trainer = self.run.trainer if self.run is not None else None
        return (
            trainer is None or self.resumed_from is None or trainer.global_step <= self.resumed_from
        )


@contextmanager
def recording(out_dir: Path, cfg: DictConfig, title: str, note: str = "") -> Iterator[Record]:
    """metrics.json in `out_dir` however the block ends, its `status` saying how (plus `note`);
    the HPARAMS entry and files flushed; the summary when it completes. Under DDP, rank 0
    writes for every process."""
    record, started, status = Record(), time.perf_counter(), "failed"
    earlier_events = set(out_dir.rglob(EVENT_FILES))
    try:
        yield record
        status = "completed"
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise
    except Exception as error:
        known = stopped(error)  # a RunStopped, a refused value, missing data, a full disk
        status = known.status if known else f"failed: {type(error).__name__}: {error}"
        status = status.splitlines()[0]
        if isinstance(known, DiskFull) and not isinstance(error, DiskFull):
            raise known from error
        raise
    finally:
        try:
            if out_dir.is_dir():  # else removed while the run ran: nothing to write into
                _finish(record, cfg, status, note, out_dir, title, started, earlier_events)
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            if status != "completed":  # already stopping: its own message says more
                log.warning("nnlab: no space left to write %s either", error.filename or out_dir)
            else:  # the results could not all be written: the run did not complete
                full = DiskFull(str(error.filename or out_dir))
                with contextlib.suppress(OSError):
                    write_metrics(out_dir, record.metrics, full.status, cfg.get("tags"))
                raise full from error


def _finish(
    record: Record,
    cfg: DictConfig,
    status: str,
    note: str,
    out_dir: Path,
    title: str,
    started: float,
    earlier: set[Path],
) -> None:
    run = record.run
    trainer = run.trainer if run is not None else None
    completed = status == "completed"
    if trainer is not None and not completed:  # the latest values, for the report
        record.metrics = {**run.logged_metrics(), **record.metrics}
    if record.left_as_it_was(status):
        if trainer is not None:  # and without this attempt's event files
            close_writers(trainer.loggers, keep=lambda events: events in earlier)
        logging.getLogger(DETAILS).info("The resume ended before its first step (%s)", status)
        return
    if layout.is_other_rank() or (trainer is not None and not trainer.is_global_zero):
        return  # rank 0 writes for every process (another node's, failing early, included)
    ending = status + (record.note if completed else "") + note
    write_metrics(out_dir, record.metrics, ending, cfg.get("tags"))
    if trainer is not None:
        log_hparams(trainer.loggers, cfg, sorted(record.metrics))
        close_writers(trainer.loggers, keep=lambda events: completed or _holds_results(events))
    seconds = time.perf_counter() - started
    details = logging.getLogger(DETAILS)
    details.info("%s: %s in %.1f s; run dir %s", title, ending, seconds, out_dir)
    for name, value in sorted(record.metrics.items()):
        details.info("  %-24s %.6g", name, value)
    if completed:
        tensorboard = trainer is not None and bool(tensorboard_writers(trainer.loggers))
        print_summary(title, ending, record.metrics, out_dir, seconds, tensorboard)


def write_metrics(
    run_dir: Path, metrics: Mapping[str, float], status: str, tags: Iterable[str] | None = None
) -> Path:
    """metrics.json: the final metrics by their TensorBoard names, `status`, and the run's tags.
    json writes NaN as NaN, which Python reads back: a diverged run keeps its NaN."""
    payload: dict[str, Any] = {name: float(value) for name, value in sorted(metrics.items())}
    payload["status"] = status
    if tags:
        payload["tags"] = [str(tag) for tag in tags]
    if os.environ.get(DEVICES) and os.environ.get(JOB_DEVICE):  # a sweep's, for this job
        payload["device"] = os.environ[JOB_DEVICE]
    path = run_dir / layout.METRICS
    text = json.dumps(payload, indent=2) + "\n"
    write_atomically(path, lambda partial: partial.write_text(text))
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(partial)` a file beside `path`, then rename it to `path`: a reader, or a run that
    a full disk or a kill stops halfway, never sees half a file, and the earlier version stays
    whole until the new one is complete. A full disk's error names the file."""
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        named = str(error.filename or partial) if isinstance(error, OSError) else ""
        if isinstance(error, OSError) and error.errno in DISK_FULL and named == str(partial):
            raise OSError(error.errno, error.strerror, str(path)) from error  # not its partial
        raise


def has_stage(module: Any, datamodule: Any, step: str, loader: str) -> bool:
    """Whether the module defines `step` (test_step), and the data `loader` (test_dataloader):
    Lightning takes every loader from the datamodule when there is one, else from the module."""
    from lightning.pytorch.utilities.model_helpers import is_overridden

    source = module if datamodule is None else datamodule
    return is_overridden(step, module) and is_overridden(loader, source)


def test_and_analyse(run: Run, out_dir: Path) -> dict[str, float]:
    """Test the weights in memory, then, on rank 0, the module's `analyse(datamodule)` if it
    has one and `analyse` is on: its figures, tables and arrays go to `out_dir` and the
    loggers. The metrics. A value that the data's or the task's setup refuses there (nnlab-eval
    with data.test_subset=...) is named under the key typed, as in training."""
    from nnlab.run.build import fit_error

    try:
        return _test_and_analyse(run, out_dir)
    except Exception as error:
        known = fit_error(run.cfg, error)
        if known is None:
            raise
        raise known from None


def _test_and_analyse(run: Run, out_dir: Path) -> dict[str, float]:
    trainer, task, datamodule = run.trainer, run.task, run.datamodule
    metrics: dict[str, float] = {}
    if has_stage(task, datamodule, "test_step", "test_dataloader"):
        trainer.test(task, datamodule=datamodule, verbose=False)
        metrics = run.logged_metrics()
    else:
        log.info("No test: %s has no test_step or no test_dataloader", type(task).__name__)
    analyse = getattr(task, "analyse", None)
    if trainer.is_global_zero and callable(analyse) and run.cfg.get("analyse", True):
        analysis = analyse(datamodule)
        save_analysis(analysis, out_dir, trainer.loggers, trainer.global_step)
        metrics |= analysis.metrics | analysis.breakdown
    return metrics


def save_analysis(analysis: Any, run_dir: Path, loggers: list[Any], step: int) -> None:
    """An nnlab.tasks.base.Analysis: figures/<name>.png, <table>.csv, <arrays>.npz, and the
    same in the loggers (figures as images, tables as text, metrics as scalars)."""
    import numpy as np

    save_figures(analysis.figures, run_dir, loggers, step)
    for logger in loggers if analysis.metrics else []:
        logger.log_metrics(analysis.metrics, step)
    for name, rows in analysis.tables.items():
        if not rows:
            continue

        def write_csv(path: Path, rows: list[dict] = rows) -> None:
            with path.open("w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

        write_atomically(run_dir / f"{name}.csv", write_csv)
        cell = lambda value: f"{value:.4f}" if isinstance(value, float) else str(value)  # noqa: E731
        lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(cell(v) for v in row.values()) + " |" for row in rows]
        for writer in tensorboard_writers(loggers):
            writer.add_text(f"tables/{name}", "\n".join(lines), step)

    def save_arrays(path: Path, arrays: dict) -> None:
        with path.open("wb") as file:  # to a file object: given a name, numpy appends ".npz"
            np.savez_compressed(file, **arrays)

    for name, arrays in analysis.arrays.items():
        write_atomically(run_dir / f"{name}.npz", functools.partial(save_arrays, arrays=arrays))


def save_figures(figures: Mapping[str, Any], run_dir: Path, loggers: list[Any], step: int) -> None:
    """Each figure as figures/<name>.png, and as `figures/<name>` in the loggers."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    folder = run_dir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        canvas = FigureCanvasAgg(figure)
        canvas.draw()  # rendered once, for the PNG and for TensorBoard
        pixels = np.asarray(canvas.buffer_rgba())
        path = folder / f"{name}.png"
        write_atomically(path, functools.partial(imsave, arr=pixels, format="png"))
        for writer in tensorboard_writers(loggers):
            writer.add_image(f"figures/{name}", pixels[..., :3], step, dataformats="HWC")
        trackers.log_figure(loggers, name, path, step)


def tensorboard_writers(loggers: Iterable[Any]) -> list[Any]:
    return [logger.experiment for logger in loggers if type(logger).__name__ == "TensorBoardLogger"]


def log_hparams(loggers: list[Any], cfg: DictConfig, metric_names: list[str]) -> None:
    """The run in TensorBoard's HPARAMS tab, with its final metrics as the columns (TensorBoard
    reads each from the latest value of that tag), and the same flat values for every other
    logger. Lightning's `log_hyperparams(params, metrics)` would also log the metrics at step
    0, a false point on every curve: the summaries are written directly instead."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    flat = flat_hparams(cfg)
    summaries = hparams(flat, dict.fromkeys(metric_names, 0.0))
    for writer in tensorboard_writers(loggers):
        # Lightning closes its writer when fit or test ends; a new one joins the same run.
        target = writer if writer.file_writer is not None else SummaryWriter(writer.log_dir)
        for summary in summaries:
            target.file_writer.add_summary(summary)
        if cfg.get("tags"):
            target.add_text("tags", ", ".join(str(tag) for tag in cfg.tags), 0)
        if target is not writer:
            target.close()
    for logger in loggers:
        if type(logger).__name__ != "TensorBoardLogger":
            logger.log_hyperparams(flat)


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The swept and sweepable values, as flat `group.key` entries TensorBoard can show: the
    command's own keys first (TensorBoard ticks the first columns)."""

    from nnlab.overrides import command_overrides, key_of

    values: dict[str, Any] = {"experiment": cfg.task_name, "seed": cfg.get("seed")}
    if cfg.get("tags"):
        values["tags"] = ",".join(str(tag) for tag in cfg.tags)
    values["trainer.max_steps"] = cfg.trainer.get("max_steps")
    for group in HPARAM_GROUPS:
        if cfg.get(group) is None:  # a module that builds its own network has model: null
            continue
        node = OmegaConf.to_container(cfg[group], resolve=True)
        raw = OmegaConf.to_container(cfg[group], resolve=False)
        for key, value in raw.items():  # `network: ${model}` is shown once, as model.*
            if isinstance(value, str) and value.strip("${}") in HPARAM_GROUPS:
                node.pop(key)
        _flatten(node, group, values)
    first = [k for k in dict.fromkeys(key_of(o) for o in command_overrides()) if k in values]
    ordered = first + [key for key in values if key not in first]
    return {key: _shown(values[key]) for key in ordered}


def _flatten(node: Any, prefix: str, into: dict[str, Any]) -> None:
    if not isinstance(node, dict):
        into[prefix] = node
        return
    for key, value in node.items():
        if key == "_target_":  # the class, by its short name: optimizer.class = Adam
            into[f"{prefix}.class"] = str(value).rsplit(".", 1)[-1]
        elif not key.startswith("_"):
            _flatten(value, f"{prefix}.{key}", into)


def _shown(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return "null" if value is None else str(value)


def close_writers(loggers: list[Any], keep: Callable[[Path], bool]) -> None:
    """Flush and close the TensorBoard files (what the analysis logged after Lightning closed
    them would otherwise wait for the exit), removing the event files `keep` refuses; end a W&B
    run."""
    for writer in tensorboard_writers(loggers):
        writer.flush()
        writer.close()
        for events in Path(writer.log_dir).glob(EVENT_FILES):
            if not keep(events):
                events.unlink()
    trackers.finish(loggers)


def _holds_results(events: Path) -> bool:
    """Whether an event file holds anything beyond the HPARAMS entry: a run that failed before
    its first value is not a run to list."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for event in EventFileLoader(str(events)).Load():
        if any(not value.tag.startswith("_hparams_/") for value in event.summary.value):
            return True
    return False


def print_summary(
    title: str,
    status: str,
    metrics: Mapping[str, float],
    run_dir: Path,
    seconds: float,
    tensorboard: bool,
) -> None:
    """The final metrics, where the run lives and how to look at it; a sweep's job (whose
    console is shared) prints its validation metrics on one line instead."""
    from rich.console import Console
    from rich.table import Table

    from nnlab.train import is_multirun

    console = Console(soft_wrap=True)
    if is_multirun():
        scores = "  ".join(
            f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith(("val/", "val_"))
        )
        console.print(f"{run_dir.name}: {status} in {seconds:.1f} s  {scores}", highlight=False)
        return
    table = Table(title=f"{title}: {status} in {seconds:.1f} s", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, "nan" if math.isnan(value) else f"{value:.4f}")
    console.print(table)
    console.print(f"Run dir:     {run_dir}")
    if tensorboard:
        console.print(
            f"TensorBoard: tensorboard --logdir {run_dir}   (`make tensorboard`: every run)"
        )
