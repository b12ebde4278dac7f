"""k-fold cross-validation: `data.folds=5 data.fold=0,1,2,3,4` (or `data.fold='range(5)'`).

The rows of the training and validation splits are pooled and dealt into `folds` folds; fold
`fold` validates and the others train. The test split stays as it is, so every fold is tested
on the same data, and nnlab-report averages the folds as it averages seeds. How the rows are
dealt depends on the data:

- stratified (classifiers): each class's rows, in a seeded order, dealt in turn, so that each
  fold holds each class in the same share;
- contiguous (series): blocks in time order, so that a fold validates on a stretch of time;
- shuffled (anything else): a seeded order, dealt in turn.

A data module of your own can call `fold_of` on its pooled rows in its `setup`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from nnlab.checks import BadValue, check_int

Dealt = Literal["stratified", "contiguous", "shuffled"]


def check_folds(folds: int | None, fold: int) -> None:
    """`folds` None (no folds: the data's own validation split) or at least 2, and `fold` one
    of them."""
    if folds is None:
        if fold != 0:
            raise BadValue("fold", fold, "a fold needs data.folds, the number of folds")
        return
    check_int("folds", folds, minimum=2)
    check_int("fold", fold, minimum=0)
    if fold >= folds:
        raise BadValue("fold", fold, f"expected a fold from 0 to {folds - 1} of data.folds")


def fold_of(
    count: int, folds: int, seed: int, how: Dealt, labels: np.ndarray | None = None
) -> np.ndarray:
    """The fold of each of `count` pooled rows (in their order), dealt `how`; `labels`: each
    row's class, for `stratified`."""
    if count < folds:
        raise BadValue("folds", folds, f"more folds than the {count} rows to deal")
    dealt = np.empty(count, dtype=np.int64)
    if how == "contiguous":
        dealt[:] = np.arange(count) * folds // count
        return dealt
    rng = np.random.default_rng(seed)
    groups = (
        [np.arange(count)]
        if how == "shuffled"
        else [np.flatnonzero(labels == label) for label in np.unique(labels)]
    )
    start = 0
    for rows in groups:  # each class continues the turn where the last one ended
        order = rng.permutation(rows)
        dealt[order] = (start + np.arange(len(order))) % folds
        start += len(order)
    return dealt
