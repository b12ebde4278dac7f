"""`nnlab-report DIR`: one table and one picture of a sweep's runs.

    nnlab-report logs/rings/multiruns/2026-11-29_14-03-07.042_a3f9c2
    nnlab-report DIR --metric val/loss --x model.hidden_nodes --lines model.activation

DIR is a multirun dir or any folder of run dirs (found by their .hydra/ folder). It writes
report.csv (one row per run: the overrides that differ between runs, its status and every
metric of its metrics.json), report.md (the same table, failed runs first, and when seeds were
swept, each setting's mean and 95% t-interval over its seeds) and report.png
(one metric against one swept parameter, a line per value of a second one, mean and spread
over seeds when seeds were swept). Runs that failed are listed with the reason their
metrics.json gives; runs without one (killed, or still running) are listed as such.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlab.errors import BadInput, ConfigError, exits
from nnlab.overrides import values
from nnlab.run import layout

SEED_KEYS = ("seed", "data.fold")  # repeats of one setting: seeds, and k-fold's folds
SHOWN_KEYS = ("tags", "device")  # from metrics.json: columns of the table, never swept axes
# The default metric: nnlab's names, then the underscore names most modules log.
PREFERRED_METRICS = tuple(
    f"{stage}{sep}{name}" for stage in ("val", "test") for name in ("acc", "loss") for sep in "/_"
)


@dataclass(frozen=True)
class Summary:
    """A metric over `n` runs (seeds): the mean and its 95% t-interval, [low, high]. With one
    run there is no interval (low and high are NaN): one seed says nothing about the spread."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "no runs"
        if self.n == 1:
            return f"{self.mean:.4g} (1 run, no interval)"
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def summarize(values: list[float], confidence: float = 0.95) -> Summary:
    """The mean of `values` and Student's t-interval for it: the seeds are a small sample, so
    the normal's 1.96 would be too narrow (with 5 seeds t is 2.78)."""
    finite = [float(v) for v in values if math.isfinite(v)]
    n = len(finite)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    mean = sum(finite) / n
    if n == 1:
        return Summary(mean, math.nan, math.nan, 1)
    from scipy import stats  # only here: the table of runs needs none of scipy's import time

    spread = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1) / n)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * spread
    return Summary(mean, mean - half, mean + half, n)


def over_seeds(
    runs: list[RunRecord], metric: str, keys: list[str]
) -> dict[tuple[Any, ...], Summary]:
    """`metric` summarized over the completed runs of each setting: one entry per combination
    of values of `keys` (the swept keys other than the seed), in the runs' order."""
    groups: dict[tuple[Any, ...], list[float]] = defaultdict(list)
    for run in runs:
        setting = tuple(run.overrides.get(key) for key in keys)
        groups.setdefault(setting, [])
        if run.completed and metric in run.metrics:
            groups[setting].append(run.metrics[metric])
    return {setting: summarize(values) for setting, values in groups.items()}


@dataclass
class RunRecord:
    """One run dir: what it overrode, how it ended, and its final metrics."""

    path: Path
    overrides: dict[str, Any]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "completed"


def read_runs(folder: Path) -> list[RunRecord]:
    runs = []
    for hydra_dir in sorted(folder.rglob(".hydra"), key=_natural_order):
        run_dir = hydra_dir.parent
        try:  # a run dir's files are data, and may be truncated or hand-edited
            overrides = values(layout.saved_overrides(run_dir, "dir"))
        except ConfigError as error:
            print(
                f"nnlab-report: {run_dir}: {error.expected}; its settings stay blank",
                file=sys.stderr,
            )
            overrides = {}
        metrics_file = run_dir / layout.METRICS
        if not metrics_file.is_file():
            runs.append(RunRecord(run_dir, overrides, "no metrics.json: killed, or still running"))
            continue
        try:
            payload = json.loads(layout.read_small(metrics_file))
        except (OSError, ValueError, RecursionError):
            payload = None
        if not isinstance(payload, dict):
            runs.append(RunRecord(run_dir, overrides, "metrics.json does not read as JSON"))
            continue
        status = str(payload.pop("status", "unknown"))
        if payload.get("tags"):
            overrides["tags"] = ",".join(str(tag) for tag in payload["tags"])
        if payload.get("device") is not None:  # a sweep's device per job (nnlab.sweep.devices)
            overrides["device"] = str(payload.pop("device"))
        metrics = {k: float(v) for k, v in payload.items() if isinstance(v, int | float)}
        runs.append(RunRecord(run_dir, overrides, status, metrics))
    return runs


def _natural_order(path: Path) -> list[Any]:
    """Job 2 before job 10: numbers in the path compare as numbers."""
    parts = re.split(r"(\d+)", str(path))
    return [int(part) if part.isdigit() else part for part in parts]


def varying_keys(runs: list[RunRecord]) -> list[str]:
    """The override keys whose values differ between runs (what the sweep swept), after the
    runs' tags when they have any."""
    keys = sorted({key for run in runs for key in run.overrides} - set(SHOWN_KEYS))
    swept = [k for k in keys if len({_hashable(run.overrides.get(k)) for run in runs}) > 1]
    shown = [k for k in SHOWN_KEYS if any(k in run.overrides for run in runs)]
    return shown + swept  # the tags and a sweep's device per job are shown, never swept


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True)


def write_csv(runs: list[RunRecord], keys: list[str], metrics: list[str], path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["run", *keys, "status", *metrics])
        for run in runs:
            values = [run.overrides.get(key, "") for key in keys]
            scores = [run.metrics.get(name, "") for name in metrics]
            writer.writerow([run.path.name, *values, run.status, *scores])


def write_markdown(
    runs: list[RunRecord], keys: list[str], metrics: list[str], picture: Path | None, path: Path
) -> None:
    lines = [f"# Sweep report: {path.parent}", ""]
    failed = [run for run in runs if not run.completed]
    lines.append(f"{len(runs)} runs, {len(runs) - len(failed)} completed, {len(failed)} not.")
    lines.append("")
    if failed:
        lines += ["## Runs that did not complete", ""]
        lines += [f"- `{run.path.name}`: {run.status}" for run in failed]
        lines.append("")
    if picture is not None:
        lines += [f"![{picture.stem}]({picture.name})", ""]
    if any(key in SEED_KEYS for key in keys):
        lines += _seed_table(runs, keys, metrics)
    lines += _pareto_front(path.parent)
    header = ["run", *keys, "status", *metrics]
    lines += _table(header, [_run_cells(run, keys, metrics) for run in runs])
    path.write_text("\n".join(lines) + "\n")


def _pareto_front(sweep_dir: Path) -> list[str]:
    """A multi-objective search's Pareto front, as its optimization_results.yaml lists it
    (nnlab.sweep.search), with Optuna's figure of it: a table, or nothing."""
    front = layout.read_yaml(sweep_dir / "optimization_results.yaml", "pareto_front")
    try:
        header = list(front[0])
        rows = [[str(row.get(key, "")) for key in header] for row in front]
    except (LookupError, TypeError, AttributeError):
        return []  # not a multi-objective search, or a file that does not read
    figure = (
        ["![pareto_front](pareto_front.png)", ""]
        if (sweep_dir / "pareto_front.png").is_file()
        else []
    )
    title = ["## Pareto front: the trials no other trial beats on every metric", ""]
    return [*title, *figure, *_table(header, rows), ""]


def _run_cells(run: RunRecord, keys: list[str], metrics: list[str]) -> list[str]:
    cells = [run.path.name, *(str(run.overrides.get(key, "")) for key in keys), run.status]
    return cells + [_format(run.metrics.get(name)) for name in metrics]


def _seed_table(runs: list[RunRecord], keys: list[str], metrics: list[str]) -> list[str]:
    """Each setting's mean and 95% t-interval over its seeds, for the headline metrics."""
    settings = [key for key in keys if key not in (*SEED_KEYS, *SHOWN_KEYS)]
    shown = [m for m in PREFERRED_METRICS if m in metrics] or metrics[:4]
    columns = {metric: over_seeds(runs, metric, settings) for metric in shown}
    rows = []
    for setting in columns[shown[0]] if shown else {}:
        counts = {columns[metric][setting].n for metric in shown}
        cells = [str(value) for value in setting] + [str(max(counts))]
        rows.append(cells + [str(columns[metric][setting]) for metric in shown])
    repeats = " and ".join(
        {"seed": "seeds", "data.fold": "folds"}[key] for key in SEED_KEYS if key in keys
    )
    header = [*settings, "runs", *(f"{metric}, mean [95% CI]" for metric in shown)]
    title = [f"## Over {repeats}: the mean and its 95% t-interval", ""]
    return [*title, *_table(header, rows), ""] if rows else []


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def _format(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def default_axes(
    runs: list[RunRecord], keys: list[str], metric: str | None, x: str | None, lines: str | None
) -> tuple[str, str | None, str | None]:
    """The metric and the two parameters to plot, chosen from the sweep unless given."""
    available = sorted({name for run in runs for name in run.metrics})
    if metric is None:
        metric = next(
            (m for m in PREFERRED_METRICS if m in available), available[0] if available else ""
        )
    swept = [key for key in keys if key not in (*SEED_KEYS, *SHOWN_KEYS)]

    def distinct(key: str) -> int:
        return len({_hashable(run.overrides.get(key)) for run in runs})

    numeric = [k for k in swept if all(_is_number(r.overrides.get(k)) for r in runs)]
    if x is None and swept:
        x = max(numeric or swept, key=distinct)
    if lines is None:
        others = [key for key in swept if key != x]
        lines = min(others, key=distinct) if others else None
    return metric, x, lines


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def plot(runs: list[RunRecord], metric: str, x: str, lines: str | None, path: Path) -> Path:
    """`metric` against `x`, one line per value of `lines`; mean and min-max band over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: dict[Any, dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        if run.completed and metric in run.metrics and math.isfinite(run.metrics[metric]):
            label = _plain(run.overrides.get(lines)) if lines else None
            groups[label][_plain(run.overrides.get(x))].append(run.metrics[metric])
    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    for label in sorted(groups, key=str):
        points = sorted(groups[label].items(), key=lambda item: _sort_key(item[0]))
        xs = [_plot_value(value) for value, _ in points]
        means = [sum(values) / len(values) for _, values in points]
        name = f"{lines}={label}" if lines else metric
        (line,) = ax.plot(xs, means, marker="o", label=name)
        if any(len(values) > 1 for _, values in points):
            low = [min(values) for _, values in points]
            high = [max(values) for _, values in points]
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
    seeds = max((len(v) for g in groups.values() for v in g.values()), default=1)
    spread = f"\nmean and range over {seeds} runs per point" if seeds > 1 else ""
    ax.set(xlabel=x, ylabel=metric, title=f"{metric} against {x}{spread}")
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(framealpha=0.8)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def _plain(value: Any) -> Any:
    """A swept value as a plot's key: a list (per-layer widths, [4,4]) as its text."""
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if _is_number(value) else (1, str(value))


def _plot_value(value: Any) -> Any:
    return value if _is_number(value) else str(value)


def report(
    folder: Path, metric: str | None = None, x: str | None = None, lines: str | None = None
) -> Path:
    """Write report.csv, report.md and (when a parameter was swept) report.png into `folder`."""
    runs = read_runs(folder)
    if not runs:
        raise BadInput(f"no run dirs (folders with .hydra/) under {folder}")
    keys = varying_keys(runs)
    metrics = sorted({name for run in runs for name in run.metrics})
    metric, x, lines = default_axes(runs, keys, metric, x, lines)
    if metrics and metric not in metrics:
        raise BadInput(f"no metric {metric!r}; the runs have: {', '.join(metrics)}")
    for option, key in (("--x", x), ("--lines", lines)):
        if key is not None and key not in keys:
            swept = ", ".join(keys) or "none"
            raise BadInput(f"{option} {key!r} was not swept; swept: {swept}")
    write_csv(runs, keys, metrics, folder / "report.csv")
    picture = plot(runs, metric, x, lines, folder / "report.png") if x else None
    write_markdown(runs, keys, metrics, picture, folder / "report.md")
    return folder / "report.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="nnlab-report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dir", type=Path, help="a multirun dir, or any folder of run dirs")
    parser.add_argument(
        "--metric", help="the metric to plot (default: val/acc or val_acc, else the val loss)"
    )
    parser.add_argument("--x", help="the swept parameter on the x-axis (default: the numeric one)")
    parser.add_argument("--lines", help="one line per value of this parameter (default: the other)")
    args = parser.parse_args(argv)
    with exits("nnlab-report"):
        if not args.dir.is_dir():
            raise BadInput(f"{args.dir} is not a directory")
        written = report(args.dir, args.metric, args.x, args.lines)
    print(
        f"Wrote {written} and report.csv"
        + (", report.png" if (args.dir / "report.png").exists() else "")
    )


if __name__ == "__main__":
    main(sys.argv[1:])
