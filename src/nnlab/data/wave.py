"""A damped sine, y = sin(3x) exp(-x/8): the notebook's regression data."""

from __future__ import annotations

import math

import numpy as np

from nnlab.checks import BadValue, check_bool, check_fits_in_memory, check_float
from nnlab.data.in_memory import Batch, InMemoryDataModule, as_tensor


class WaveDataModule(InMemoryDataModule):
    """The notebook's grid for training; validation and test on the points between grid points.

    The midpoints x_i + step/2 alternate between val and test, so both held-out sets span the
    whole range. `flip` mirrors the curve, y(x) = f(-x): the notebook's test of why the large
    left side fits better than the small right side. Inputs and targets are (n, 1) float32;
    each split is served whole (full-batch gradient descent, as the notebook trains).
    """

    input_features = 1

    def __init__(
        self,
        x_min: float = -10.0,
        x_max: float = 10.0,
        step: float = 0.1,
        frequency: float = 3.0,
        decay: float = 8.0,
        flip: bool = False,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(folds=folds, fold=fold)
        self.x_min = check_float("x_min", x_min)
        self.x_max = check_float("x_max", x_max)
        self.step = check_float("step", step, above=0)
        if not self.x_min < self.x_max:
            raise BadValue("x_max", x_max, f"expected a number > x_min ({x_min})")
        points = (self.x_max - self.x_min) / self.step
        if not math.isfinite(points):
            raise BadValue("step", step, "expected a step that leaves a finite grid")
        if points < 4:
            raise BadValue("step", step, "expected at least 4 grid points between x_min and x_max")
        what = f"{points:,.0f} grid points, trained on in one batch"
        check_fits_in_memory("step", step, round(512 * points), what)  # as the rings, wider
        self.frequency = check_float("frequency", frequency)
        self.decay = check_float("decay", decay, above=0)
        self.flip = check_bool("flip", flip)

    def curve(self, x: np.ndarray) -> np.ndarray:
        x = -x if self.flip else x
        return np.sin(self.frequency * x) * np.exp(-x / self.decay)

    def make_splits(self) -> dict[str, Batch]:
        grid = np.arange(self.x_min, self.x_max, self.step)
        midpoints = grid[:-1] + self.step / 2
        inputs = {"train": grid, "val": midpoints[0::2], "test": midpoints[1::2]}
        splits = {
            split: (as_tensor(x[:, None]), as_tensor(self.curve(x)[:, None]))
            for split, x in inputs.items()
        }
        return self.with_folds(splits, "shuffled")
