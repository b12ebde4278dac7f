"""k-fold cross-validation: data.folds and data.fold for every built-in data module, and
nnlab-report's averages over folds, and over folds x seeds."""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pytest
import torch
from conftest import read_metrics, run_dirs
from scipy import stats

from nnlab.analysis.report import main as report_main
from nnlab.checks import BadValue
from nnlab.data.folds import fold_of
from nnlab.data.images import ImageDataModule
from nnlab.data.rings import RingsDataModule
from nnlab.data.series import SeriesDataModule
from nnlab.data.wave import WaveDataModule


def rows(split: tuple[torch.Tensor, ...]) -> set[tuple[float, ...]]:
    """A split's rows (inputs and targets), as a set."""
    return {
        tuple(row)
        for row in torch.cat([t.reshape(len(t), -1).float() for t in split[:2]], 1).tolist()
    }


def test_folds_partition_the_rows_and_stratified_folds_keep_each_class_share():
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    dealt = fold_of(len(labels), 5, seed=0, how="stratified", labels=labels)
    assert sorted(np.bincount(dealt)) == [20] * 5  # each row in exactly one fold, even sizes
    for fold in range(5):
        assert np.bincount(labels[dealt == fold]).tolist() == [12, 6, 2]
    contiguous = fold_of(10, 3, seed=0, how="contiguous")
    assert contiguous.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]  # blocks, in order
    shuffled = fold_of(10, 3, seed=0, how="shuffled")
    assert sorted(np.bincount(shuffled)) == [3, 3, 4] and shuffled.tolist() != sorted(shuffled)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"folds": 1}, "folds=1: expected an integer >= 2"),
        ({"folds": 5, "fold": 5}, "fold=5: expected a fold from 0 to 4 of data.folds"),
        ({"fold": 2}, "fold=2: a fold needs data.folds"),
    ],
)
def test_bad_folds_are_refused_naming_the_key(settings, message):
    with pytest.raises(BadValue, match=message.replace("(", r"\(")):
        RingsDataModule(**settings)


def test_a_series_fold_too_short_for_a_window_is_refused():
    data = SeriesDataModule(folds=40, fold=0)  # 26 points a fold; a window reads 30
    with pytest.raises(BadValue, match="folds=40: fold 0 leaves the val split no whole window"):
        data.setup()


def make(kind: str, tiny_mnist: Any, **folds: Any) -> Any:
    if kind == "images":
        return ImageDataModule(data_dir=str(tiny_mnist), download=False, seed=1, **folds)
    modules = {"rings": RingsDataModule, "wave": WaveDataModule, "series": SeriesDataModule}
    return modules[kind](**folds)


@pytest.mark.parametrize("kind", ["rings", "wave", "series", "images"])
def test_each_fold_validates_on_its_own_rows_and_the_test_split_stays(kind, tiny_mnist):
    plain = make(kind, tiny_mnist)
    plain.setup()
    pooled = rows(plain.splits["train"]) | rows(plain.splits["val"])
    seen: set[tuple[float, ...]] = set()
    for fold in range(4):
        data = make(kind, tiny_mnist, folds=4, fold=fold)
        data.setup()
        train, val = rows(data.splits["train"]), rows(data.splits["val"])
        assert not train & val and val and not val & seen
        seen |= val
        if kind != "series":  # a series window straddling two blocks is left out
            assert train | val == pooled
        if kind == "series":  # the same test windows, scaled by the training points' statistics
            assert np.array_equal(data.targets_at["test"], plain.targets_at["test"])
        else:
            assert torch.equal(data.splits["test"][0], plain.splits["test"][0])
        if kind in ("rings", "images"):  # stratified: each class in the same share
            labels, everything = (
                data.splits["val"][1],
                torch.cat([plain.splits[s][1] for s in ("train", "val")]),
            )
            for label in everything.unique():
                share = (labels == label).float().mean() - (everything == label).float().mean()
                assert abs(share) < 0.02
        if kind == "series":  # a block of time: the val targets are consecutive points
            at = data.targets_at["val"]
            assert (np.diff(at) == 1).all()
    if kind != "series":
        assert seen == pooled  # every pooled row validates in exactly one fold


def test_a_sweep_over_folds_and_seeds_is_averaged_by_the_report(cli, tmp_path):
    result = cli(
        "experiment=rings",
        "trainer.max_steps=100",
        "model.hidden_nodes=2,3",
        "data.folds=2",
        "data.fold=0,1",
        "seed=0,1",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    (sweep_dir,) = (tmp_path / "logs" / "rings" / "multiruns").iterdir()
    report_main([str(sweep_dir)])
    markdown = (sweep_dir / "report.md").read_text()
    assert "## Over seeds and folds: the mean and its 95% t-interval" in markdown
    runs = [run for run in run_dirs(sweep_dir) if "hidden_nodes=2" in run.name]
    values = [read_metrics(run)["val/acc"] for run in runs]
    assert len(values) == 4
    mean = statistics.fmean(values)
    half = stats.t.ppf(0.975, 3) * statistics.stdev(values) / math.sqrt(4)
    row = next(line for line in markdown.splitlines() if line.startswith("| 2 | 4 |"))
    assert f"{mean:.4f} [{mean - half:.4f}, {mean + half:.4f}]" in row
