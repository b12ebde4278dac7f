"""The most common style of all: `train_loss`/`val_loss`, a plain shuffled DataLoader, dropout,
and a ReduceLROnPlateau scheduler in the dict Lightning's docs show."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from corpus.data import blobs


class Classifier(L.LightningModule):
    def __init__(self, features: int = 8, hidden: int = 16, lr: float = 0.01):
        super().__init__()
        self.save_hyperparameters()
        self.model = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, 2)
        )

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": "val_loss"},
        }


class BlobData(L.LightningDataModule):
    def __init__(self, features: int = 8, batch_size: int = 16):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage=None):
        self.train = TensorDataset(*blobs(200, self.hparams.features, seed=0))
        self.val = TensorDataset(*blobs(100, self.hparams.features, seed=1))
        self.test = TensorDataset(*blobs(100, self.hparams.features, seed=2))

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=50)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=50)


class AccuracyOnly(Classifier):
    """Validates by accuracy alone: no loss to choose the best checkpoint by."""

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


class Stream(IterableDataset):
    """Points as a stream, in an order of its own: nothing a resume can take up mid-way."""

    def __init__(self, count: int, features: int, seed: int):
        self.x, self.y = blobs(count, features, seed)

    def __iter__(self):
        for index in torch.randperm(len(self.y)):
            yield self.x[index], self.y[index]


class StreamData(BlobData):
    def train_dataloader(self):
        return DataLoader(Stream(120, self.hparams.features, seed=0), batch_size=16)
