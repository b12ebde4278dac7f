"""In-memory splits served as one batch each: the data path of the small synthetic tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch

Batch = tuple[torch.Tensor, torch.Tensor]
SPLITS = ("train", "val", "test")


class SingleBatch:
    """An iterable of exactly one batch. Lightning takes any sized iterable as a dataloader."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def __iter__(self) -> Iterator[Batch]:
        yield self.batch

    def __len__(self) -> int:
        return 1


class FullBatchDataModule(L.LightningDataModule, ABC):
    """Generates every split once, then hands each to Lightning as a single (inputs, targets) batch.

    The notebook trains with full-batch gradient descent on a few thousand points. A DataLoader
    would rebuild that batch item by item on every step; a SingleBatch costs nothing to
    iterate, and makes one epoch equal one batch.
    """

    input_features: int  # the width of one input, which the network's first layer must match

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, Batch] = {}

    @abstractmethod
    def generate(self) -> dict[str, Batch]:
        """The (inputs, targets) of each split in SPLITS."""

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.generate()

    def train_dataloader(self) -> SingleBatch:
        return SingleBatch(self.splits["train"])

    def val_dataloader(self) -> SingleBatch:
        return SingleBatch(self.splits["val"])

    def test_dataloader(self) -> SingleBatch:
        return SingleBatch(self.splits["test"])


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
