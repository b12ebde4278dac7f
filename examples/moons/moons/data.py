"""Two interleaving half circles, as a plain LightningDataModule: nothing here knows nnlab."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def make_moons(count: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` points per moon, with Gaussian noise of std `noise`: (2 count, 2) and labels."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi, (2, count))
    upper = np.stack([np.cos(angle[0]), np.sin(angle[0])], axis=1)
    lower = np.stack([1 - np.cos(angle[1]), 0.5 - np.sin(angle[1])], axis=1)
    points = np.concatenate([upper, lower]) + noise * rng.standard_normal((2 * count, 2))
    labels = np.repeat([0, 1], count)
    return torch.tensor(points, dtype=torch.float32), torch.tensor(labels)


class MoonsDataModule(L.LightningDataModule):
    def __init__(
        self, train_per_moon: int = 500, noise: float = 0.2, batch_size: int = 64, seed: int = 0
    ):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        sizes = {"train": self.hparams.train_per_moon, "val": 200, "test": 200}
        self.datasets = {
            split: TensorDataset(*make_moons(count, self.hparams.noise, self.hparams.seed + i))
            for i, (split, count) in enumerate(sizes.items())
        }

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["train"], batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["val"], batch_size=256)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.datasets["test"], batch_size=256)
