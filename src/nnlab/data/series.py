"""Time series for the recurrent task: generated, windowed, split in time order, scaled.

The notebook's RNN section drew one noise value for its whole series and took its test
targets from the training range; here noise is drawn per point, the split is chronological
(a window belongs to the split its target falls in), and the scaling statistics come from
the training range only: the series is non-stationary, and the test range must stay unseen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nnlab.checks import (
    BadValue,
    check_bool,
    check_choice,
    check_fits_in_memory,
    check_float,
    check_int,
)
from nnlab.data.folds import fold_of
from nnlab.data.in_memory import InMemoryDataModule

GENERATORS = ("linear", "quadratic", "sine", "random_walk")

# inputs (n, window, 1), step targets (n, window), horizon targets (n, horizon), base level (n,)
SeriesBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def generate(kind: str, length: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A series of `length` points; Gaussian noise of std `noise` drawn for every point."""
    t = np.arange(length, dtype=np.float64)
    jitter = noise * rng.standard_normal(length)
    if kind == "linear":  # the notebook's 4 + 3t
        return 4 + 3 * t + jitter
    if kind == "quadratic":
        return 4 + 0.5 * t + 0.002 * t**2 + jitter
    if kind == "sine":  # a season of 50 steps on a slow trend
        return 0.01 * t + np.sin(2 * np.pi * t / 50) + jitter
    if kind == "random_walk":
        return np.cumsum(rng.standard_normal(length)) + jitter
    raise ValueError(kind)


@dataclass(frozen=True)
class Scaler:
    """Model space <-> series levels. With `difference`, the model sees one-step changes and
    predicts the change over `lag` steps, added to the last known level."""

    mean: float
    std: float
    difference: bool

    def to_levels(self, predicted: torch.Tensor, base_level: torch.Tensor) -> torch.Tensor:
        values = predicted * self.std + self.mean
        return base_level + values if self.difference else values


class SeriesDataModule(InMemoryDataModule):
    """Windows of `window` past values, each predicting the value `lag` steps after its end.

    The task gets, per window: its inputs; the step targets (the value `lag` after every
    input, for teacher forcing over the whole window, as the notebook trains); the next
    `horizon` values from `lag` on (for the encoder-decoder); and the last level, to turn
    predictions back into the series' units. Training draws shuffled mini-batches of windows;
    validation and testing take each split whole.
    """

    def __init__(
        self,
        generator: str = "sine",
        length: int = 1200,
        noise: float = 0.1,
        lag: int = 1,
        window: int = 30,
        horizon: int = 1,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        difference: bool = False,
        batch_size: int = 32,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(check_int("batch_size", batch_size, minimum=1), None, seed, folds, fold)
        self.generator = check_choice("generator", generator, GENERATORS)
        self.length = check_int("length", length, minimum=10)
        self.noise = check_float("noise", noise, minimum=0)
        self.lag = check_int("lag", lag, minimum=1)
        self.window = check_int("window", window, minimum=1)
        self.horizon = check_int("horizon", horizon, minimum=1)
        # Each window a row of its own (float32), drawn first as float64.
        windows = f"{self.length:,} windows of {self.window + self.horizon} values"
        needed = self.length * (4 * (self.window + self.horizon) + 64)
        check_fits_in_memory("length", length, needed, windows)
        self.val_fraction = check_float("val_fraction", val_fraction, above=0)
        self.test_fraction = check_float("test_fraction", test_fraction, above=0)
        if not self.val_fraction + self.test_fraction < 1:
            raise BadValue(
                "test_fraction", test_fraction, "val_fraction + test_fraction must be < 1"
            )
        self.difference = check_bool("difference", difference)
        val_start = round(length * (1 - self.val_fraction - self.test_fraction))
        test_start = round(length * (1 - self.test_fraction))
        self.ranges = {
            "train": (0, val_start),
            "val": (val_start, test_start),
            "test": (test_start, length),
        }
        # The first window ends at `offset`; its last target must still lie in the training range.
        self.offset = self.window - 1 + int(self.difference)
        if self.offset + self.lag + self.horizon > val_start:
            raise BadValue(
                "window",
                window,
                f"too long: the training range has {val_start} of the {length} points",
            )
        if min(test_start - val_start, length - test_start) < self.horizon:
            raise BadValue("horizon", horizon, "longer than the val or test range")
        self.series = np.empty(0)
        self.scaler = Scaler(0.0, 1.0, self.difference)
        self.targets_at: dict[str, np.ndarray] = {}  # each window's target index in the series

    input_features = None  # the recurrent networks read one value per step

    def make_splits(self) -> dict[str, SeriesBatch]:
        rng = np.random.default_rng(self.seed)
        self.series = generate(self.generator, self.length, self.noise, rng)
        inputs = np.diff(self.series, prepend=np.nan) if self.difference else self.series
        split_of = self._split_of_points()
        seen = inputs[int(self.difference) :][split_of[int(self.difference) :] == 0]
        self.scaler = Scaler(float(seen.mean()), float(seen.std()) or 1.0, self.difference)
        self.model_inputs = (inputs - self.scaler.mean) / self.scaler.std
        # Each window belongs to the split its targets (lag .. lag + horizon - 1 after its end)
        # all lie in; one whose targets straddle two splits is left out.
        last = np.arange(self.offset, self.length - self.lag - self.horizon + 1)
        targets = split_of[last[:, None] + self.lag + np.arange(self.horizon)]
        splits = {}
        for index, split in enumerate(self.ranges):
            chosen = last[(targets == index).all(axis=1)]
            if not len(chosen):  # a fold too short (the ranges' own lengths are checked above)
                reason = f"fold {self.fold} leaves the {split} split no whole window"
                raise BadValue("folds", self.folds, f"{reason}; use fewer folds")
            self.targets_at[split] = chosen + self.lag
            splits[split] = self._windows(chosen)
        return splits

    def _split_of_points(self) -> np.ndarray:
        """Each point's split (0 train, 1 val, 2 test): the ranges in time order, or with
        folds, the train and val ranges dealt into contiguous blocks, fold `fold` validating;
        the training statistics come from the points that train."""
        split_of = np.zeros(self.length, dtype=np.int64)
        for index, (first, end) in enumerate(self.ranges.values()):
            split_of[first:end] = index
        if self.folds is not None:
            pooled = self.ranges["val"][1]
            dealt = fold_of(pooled, self.folds, self.seed, "contiguous")
            split_of[:pooled] = dealt == self.fold
        return split_of

    def _windows(self, last: np.ndarray) -> SeriesBatch:
        positions = last[:, None] - np.arange(self.window)[::-1]  # (n, window), in time order
        ahead = last[:, None] + self.lag + np.arange(self.horizon)  # (n, horizon)
        return (
            _float(self.model_inputs[positions][..., None]),
            _float(self._targets(positions, positions + self.lag)),
            # each horizon target from the step before it: one-step changes, as the decoder
            # feeds them back and the rollout adds them up
            _float(self._targets(np.concatenate([last[:, None], ahead[:, :-1]], axis=1), ahead)),
            _float(self.series[last]),
        )

    def _targets(self, origins: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Model-space targets: the level at `targets`, or its change since `origins`."""
        values = (
            self.series[targets] - self.series[origins] if self.difference else self.series[targets]
        )
        return (values - self.scaler.mean) / self.scaler.std


def _float(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
