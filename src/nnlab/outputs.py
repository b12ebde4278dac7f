"""What a run leaves behind: metrics.json, figures, TensorBoard's HPARAMS entry, and its summary."""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from nnlab import trackers
from nnlab.errors import DISK_FULL

if TYPE_CHECKING:  # imported where used: a run's metrics.json is written before Lightning loads
    from lightning.pytorch.loggers import Logger
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.json"
HPARAM_GROUPS = ("data", "model", "task", "optimizer")  # the config nodes shown in HPARAMS


def write_metrics(
    run_dir: Path, metrics: Mapping[str, float], status: str, tags: Iterable[str] = ()
) -> Path:
    """Write metrics.json: the final metrics, keyed by their TensorBoard names, plus `status`
    (and the run's `tags`, when it has any).

    The file is written to a temporary name and renamed, so a reader never sees half of it.
    """
    payload: dict[str, Any] = {name: float(value) for name, value in sorted(metrics.items())}
    payload["status"] = status
    if tags:
        payload["tags"] = [str(tag) for tag in tags]
    path = run_dir / METRICS_FILE
    # json writes NaN and Infinity, which Python reads back; a diverged run keeps its NaN.
    text = json.dumps(payload, indent=2) + "\n"
    write_atomically(path, lambda partial: partial.write_text(text))
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(partial)` a file beside `path`, then rename it to `path`: a reader, or a run
    that a full disk or a kill stops halfway, never leaves half a file, and an earlier version
    stays whole until the new one is complete. A disk-full error is raised with the file's
    name (a failed `write` of an open file does not give it)."""
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        os.replace(partial, path)
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in DISK_FULL and not error.filename:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


def is_tensorboard(logger: Logger) -> bool:
    from lightning.pytorch.loggers import TensorBoardLogger

    return isinstance(logger, TensorBoardLogger)


def tensorboard_writers(loggers: Iterable[Logger]) -> list[Any]:
    return [logger.experiment for logger in loggers if is_tensorboard(logger)]


def log_hparams(loggers: Iterable[Logger], cfg: DictConfig, metric_names: Iterable[str]) -> None:
    """Register the run in TensorBoard's HPARAMS tab, with its metrics as the comparison columns,
    and give every other logger (CSV, MLflow, W&B) the same flat hyperparameters.

    Lightning's own `log_hyperparams(params, metrics)` also logs the metric values at step 0,
    which would add a false point to every curve; writing the summaries directly avoids it.
    TensorBoard reads each metric column from the latest scalar with that tag in the run.
    """
    from torch.utils.tensorboard.summary import hparams

    from nnlab.internals import file_writer

    flat = flat_hparams(cfg)
    experiment, start, end = hparams(flat, dict.fromkeys(metric_names, 0.0))
    for writer in tensorboard_writers(loggers):
        for summary in (experiment, start, end):
            file_writer(writer).add_summary(summary)
        if cfg.get("tags"):
            writer.add_text("tags", ", ".join(str(tag) for tag in cfg.tags), 0)
    for logger in loggers:
        if not is_tensorboard(logger):
            logger.log_hyperparams(flat)


def close_writers(
    loggers: Iterable[Logger], keep_empty: bool = True, keep_only: set[Path] | None = None
) -> None:
    """Flush and close the TensorBoard files (what the analysis logged after Lightning closed
    them, figures and tables, went to a writer that nothing else would flush before exit), and
    end a W&B run. Without `keep_empty`, event files with no value in them are removed; with
    `keep_only`, every event file not in it."""
    for writer in tensorboard_writers(loggers):
        writer.flush()
        writer.close()
        for events in Path(writer.log_dir).glob(EVENT_FILES):
            if keep_only is not None and events not in keep_only:
                events.unlink()
            elif not keep_empty and not _holds_results(events):  # a run that failed before
                events.unlink()  # its first value: not a run to list
    trackers.finish(loggers)


def event_files(folder: Path) -> set[Path]:
    return set(folder.rglob(EVENT_FILES))


EVENT_FILES = "events.out.tfevents.*"


def _holds_results(events: Path) -> bool:
    """Whether the event file holds anything beyond the HPARAMS entry."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    for event in EventFileLoader(str(events)).Load():
        if any(not value.tag.startswith("_hparams_/") for value in event.summary.value):
            return True
    return False


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The swept and sweepable values, as flat `group.key` entries that TensorBoard can show."""
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
    # The command's own keys first (a sweep's swept ones): TensorBoard ticks the first columns.
    changed = [key for key in _overridden_keys() if key in values]
    ordered = changed + [key for key in values if key not in changed]
    return {key: _tensorboard_value(values[key]) for key in ordered}


def _overridden_keys() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    from nnlab.overrides import key_of

    if not HydraConfig.initialized():
        return []
    keys = [key_of(o) for o in HydraConfig.get().overrides.task]
    return [k for k in dict.fromkeys(keys) if not k.startswith(("paths.", "hydra"))]


def _flatten(node: Any, prefix: str, into: dict[str, Any]) -> None:
    if not isinstance(node, dict):
        into[prefix] = node
        return
    for key, value in node.items():
        if key == "_target_":  # the class, by its short name: optimizer.class = Adam
            into[f"{prefix}.class"] = str(value).rsplit(".", 1)[-1]
        elif not key.startswith("_"):
            _flatten(value, f"{prefix}.{key}", into)


def _tensorboard_value(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return "null" if value is None else str(value)


@dataclass
class Analysis:
    """What a task reports after testing, beyond the metrics it logged while training.

    figures: saved as figures/<name>.png and logged as TensorBoard images.
    metrics: added to metrics.json and logged as scalars.
    breakdown: added to metrics.json only: values that a table and a figure show together
        (accuracy per class, per perturbation), rather than a chart of one point each.
    tables: rows of a table, saved as <name>.csv and shown in TensorBoard's TEXT tab.
    arrays: saved together as <name>.npz (predictions, for nnlab-compare).
    """

    figures: dict[str, Figure] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    breakdown: dict[str, float] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def save_analysis(analysis: Analysis, run_dir: Path, loggers: Iterable[Logger], step: int) -> None:
    loggers = list(loggers)
    save_figures(analysis.figures, run_dir, loggers, step)
    for logger in loggers:
        if analysis.metrics:
            logger.log_metrics(analysis.metrics, step)
    for name, rows in analysis.tables.items():
        _save_table(name, rows, run_dir, loggers, step)
    for name, arrays in analysis.arrays.items():
        write_atomically(run_dir / f"{name}.npz", functools.partial(_save_arrays, arrays=arrays))


def _save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as file:  # to a file object: given a name, numpy appends ".npz"
        np.savez_compressed(file, **arrays)


def _save_table(
    name: str, rows: list[dict[str, Any]], run_dir: Path, loggers: list[Logger], step: int
) -> None:
    if not rows:
        return
    columns = list(rows[0])

    def write_csv(path: Path) -> None:
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(run_dir / f"{name}.csv", write_csv)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    for writer in tensorboard_writers(loggers):
        writer.add_text(f"tables/{name}", "\n".join(lines), step)


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def save_figures(
    figures: Mapping[str, Figure], run_dir: Path, loggers: Iterable[Logger], step: int
) -> list[Path]:
    """Save each figure as figures/<name>.png and log it to TensorBoard as `figures/<name>`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imsave

    folder = run_dir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    writers = tensorboard_writers(loggers)
    paths = []
    for name, figure in figures.items():
        canvas = FigureCanvasAgg(figure)
        canvas.draw()  # rendered once, for the PNG and for TensorBoard
        pixels = np.asarray(canvas.buffer_rgba())
        path = folder / f"{name}.png"
        write_atomically(path, functools.partial(imsave, arr=pixels, format="png"))
        for writer in writers:
            writer.add_image(f"figures/{name}", pixels[..., :3], step, dataformats="HWC")
        trackers.log_figure(loggers, name, path, step)
        paths.append(path)
    return paths


def print_summary(
    task_name: str,
    status: str,
    metrics: Mapping[str, float],
    run_dir: Path,
    seconds: float,
    one_line: bool = False,
    tensorboard: bool = True,
) -> None:
    """Print the final metrics, where the run lives and how to look at it.

    `one_line` suits sweep jobs: their validation metrics and run dir, on one line.
    """
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    if one_line:
        scores = "  ".join(
            f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith(("val/", "val_"))
        )
        console.print(f"{run_dir.name}: {status} in {seconds:.1f} s  {scores}", highlight=False)
        return
    table = Table(title=f"{task_name}: {status} in {seconds:.1f} s", title_justify="left")
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
