"""A module with no validation at all: a regression trained on a shuffled loader, tested."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regression(L.LightningModule):
    def __init__(self, lr: float = 0.05):
        super().__init__()
        self.save_hyperparameters()
        self.line = nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.mse_loss(self.line(x), y)
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_mse", F.mse_loss(self.line(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def lines(start: int, stop: int) -> TensorDataset:
    """Points start..stop of a fixed set of 160 noisy points on a plane."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(160, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(160, 1, generator=generator)
    return TensorDataset(x[start:stop], y[start:stop])


class LineData(L.LightningDataModule):
    def setup(self, stage=None):
        self.train, self.test = lines(0, 120), lines(120, 160)

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=10, shuffle=True)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=40)


class RegressionWithItsLoaders(Regression):
    """Its data's loaders of its own, as Lightning lets a module have, and no datamodule."""

    def train_dataloader(self):
        return DataLoader(lines(0, 120), batch_size=10, shuffle=True)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", F.mse_loss(self.line(x), y))

    def val_dataloader(self):
        return DataLoader(lines(120, 140), batch_size=20)

    def test_dataloader(self):
        return DataLoader(lines(140, 160), batch_size=20)
