"""In-memory splits served whole: the data path of the small synthetic tasks."""

from __future__ import annotations

from abc import ABC, abstractmethod

import lightning as L
import numpy as np
import torch

from nnlab.config import check_int
from nnlab.data.batching import SingleBatch, SplitsOnDevice

Batch = tuple[torch.Tensor, torch.Tensor]
SPLITS = ("train", "val", "test")


class FullBatchDataModule(SplitsOnDevice, L.LightningDataModule, ABC):
    """Generates every split once; full-batch gradient descent on the training split.

    A training batch is the whole training set `steps_per_batch` times over: the task takes one
    optimizer step per entry (see nnlab.tasks.base.Task), so Lightning's per-batch work is paid
    once per `steps_per_batch` steps, and one epoch is one such batch. Val and test are one
    (inputs, targets) batch each. A DataLoader would rebuild these item by item on every step.
    """

    input_features: int  # the width of one input, which the network's first layer must match

    def __init__(self, steps_per_batch: int = 100) -> None:
        super().__init__()
        self.steps_per_batch = check_int("steps_per_batch", steps_per_batch, minimum=1)
        self.splits: dict[str, Batch] = {}

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per pass of the training dataloader."""
        return self.steps_per_batch

    @abstractmethod
    def generate(self) -> dict[str, Batch]:
        """The (inputs, targets) of each split in SPLITS."""

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.generate()

    def train_dataloader(self) -> SingleBatch:
        # The same tensors, already on the device: Lightning's transfer of them costs nothing.
        return SingleBatch([self.on_device("train")] * self.steps_per_batch)

    def val_dataloader(self) -> SingleBatch:
        return SingleBatch(self.on_device("val"))

    def test_dataloader(self) -> SingleBatch:
        return SingleBatch(self.on_device("test"))


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
