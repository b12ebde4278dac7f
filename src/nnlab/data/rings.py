"""Two concentric rings: the notebook's binary classification data, with held-out splits."""

from __future__ import annotations

import numpy as np

from nnlab.checks import BadValue, check_fits_in_memory, check_int, check_range
from nnlab.data.in_memory import SPLITS, Batch, InMemoryDataModule, as_tensor


class RingsDataModule(InMemoryDataModule):
    """Class 0 fills a disc, class 1 a ring around it; no straight line separates them.

    As in the notebook, the radius is uniform in its interval and the angle uniform in
    [0, 2 pi), so points crowd towards the centre of each ring. Inputs are (n, 2) float32,
    targets (n,) float32 in {0, 1}, classes interleaved as the notebook draws them. Each split
    is served whole: the notebook trains with full-batch gradient descent.
    """

    input_features = 2

    def __init__(
        self,
        train_per_class: int = 1000,
        val_per_class: int = 500,
        test_per_class: int = 500,
        inner_radius: tuple[float, float] = (0.0, 1.0),
        outer_radius: tuple[float, float] = (3.0, 4.0),
        seed: int = 100,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(seed=seed, folds=folds, fold=fold)
        self.per_class = {
            "train": check_int("train_per_class", train_per_class, minimum=1),
            "val": check_int("val_per_class", val_per_class, minimum=1),
            "test": check_int("test_per_class", test_per_class, minimum=1),
        }
        points = 2 * sum(self.per_class.values())
        # Drawn in float64 with their temporaries (about 100 bytes a point), then trained on
        # in one full batch, whose activations and gradients take as much again.
        what = f"{points:,} points, drawn and trained on in one batch"
        largest = max(self.per_class, key=self.per_class.__getitem__)  # the key to name
        size = self.per_class[largest]
        check_fits_in_memory(f"{largest}_per_class", size, 256 * points, what)
        self.inner_radius = check_range("inner_radius", inner_radius)
        self.outer_radius = check_range("outer_radius", outer_radius)
        if self.inner_radius[0] < 0:
            raise BadValue("inner_radius", list(inner_radius), "radii must be >= 0")
        if self.outer_radius[0] < self.inner_radius[1]:
            raise BadValue("outer_radius", list(outer_radius), "must lie outside inner_radius")

    def make_splits(self) -> dict[str, Batch]:
        # One random stream per split: resizing the training set leaves val and test unchanged.
        streams = np.random.SeedSequence(self.seed).spawn(len(SPLITS))
        splits = {
            split: self._draw(self.per_class[split], np.random.default_rng(stream))
            for split, stream in zip(SPLITS, streams, strict=True)
        }
        return self.with_folds(splits, "stratified")

    def _draw(self, n: int, rng: np.random.Generator) -> Batch:
        radius = np.empty((n, 2))
        radius[:, 0] = rng.uniform(*self.inner_radius, size=n)
        radius[:, 1] = rng.uniform(*self.outer_radius, size=n)
        angle = rng.uniform(0.0, 2 * np.pi, size=(n, 2))
        points = np.stack(
            [radius * np.cos(angle), radius * np.sin(angle)], axis=-1
        )  # (n, class, xy)
        labels = np.broadcast_to(np.array([0.0, 1.0]), (n, 2))
        return as_tensor(points.reshape(-1, 2)), as_tensor(labels.reshape(-1))
