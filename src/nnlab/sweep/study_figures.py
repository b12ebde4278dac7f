"""Optuna's own plots of a finished search, drawn by Optuna's visualisation module: the
optimisation history and the parameters' importances, as PNGs in the sweep dir and as images
in a TensorBoard event file there, so that `make tensorboard` shows them beside the trials.

Importances use Optuna's PED-ANOVA evaluator, which needs no scikit-learn; with too few
trials it warns that they would all be equal, and that figure is left out (the log says so).
TensorBoard's own event writer, not torch's, writes the images: the search's process does not
import torch for them.
"""

from __future__ import annotations

import io
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

log = logging.getLogger("nnlab")


def save_study_figures(study: optuna.Study, folder: Path, metrics: list[str]) -> list[Path]:
    """Draw the study's figures into `folder` (PNGs and one TensorBoard event file): for one
    metric its history and importances; for several, the Pareto front and each metric's."""
    import matplotlib.pyplot as plt
    from optuna.importance import PedAnovaImportanceEvaluator
    from optuna.visualization.matplotlib import (
        plot_optimization_history,
        plot_param_importances,
        plot_pareto_front,
    )

    drawn: dict[str, bytes] = {}
    makers: dict[str, Any] = {}
    for index, metric in enumerate(metrics):
        suffix = "" if len(metrics) == 1 else "-" + metric.replace("/", "_")
        target = None if len(metrics) == 1 else lambda t, i=index: t.values[i]
        makers[f"optimization_history{suffix}"] = lambda m=metric, t=target: (
            plot_optimization_history(study, target=t, target_name=m)
        )
        makers[f"param_importances{suffix}"] = lambda m=metric, t=target: plot_param_importances(
            study, evaluator=PedAnovaImportanceEvaluator(), target=t, target_name=m
        )
    if len(metrics) in (2, 3):  # Optuna draws a front in 2 or 3 dimensions
        makers["pareto_front"] = lambda: plot_pareto_front(study, target_names=metrics)
    for name, make in makers.items():
        try:
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                axes = make()
        except (ValueError, RuntimeError, ZeroDivisionError) as error:  # too few trials
            log.info("No %s figure for study %s: %s", name, study.study_name, error)
            continue
        caveats = [str(w.message) for w in said if issubclass(w.category, UserWarning)]
        if caveats:  # "too few trials to compute importances": a figure that would mislead
            plt.close(axes.figure)
            log.info("No %s figure for study %s: %s", name, study.study_name, caveats[0])
            continue
        figure = axes.figure
        figure.set_size_inches(7, 4.5)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")  # with the legend
        plt.close(figure)  # no figure left for a notebook to show
        drawn[name] = buffer.getvalue()
    paths = []
    for name, png in drawn.items():
        path = folder / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    if drawn:
        _write_tensorboard_images(folder, drawn)
    return paths


def _write_tensorboard_images(folder: Path, images: dict[str, bytes]) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    values = [Summary.Value(tag=f"study/{name}", image=_image(png)) for name, png in images.items()]
    writer.add_event(Event(wall_time=time.time(), step=0, summary=Summary(value=values)))
    writer.close()


def _image(png: bytes) -> Any:
    from tensorboard.compat.proto.summary_pb2 import Summary

    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    return Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
