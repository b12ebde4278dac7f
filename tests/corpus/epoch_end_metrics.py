"""torchmetrics attributes updated in each step and computed, logged and reset in
`on_train_epoch_end` / `on_validation_epoch_end`; a MetricCollection; a StepLR schedule; a
DataModule whose training loader shuffles with a seeded generator of the loader's own."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from corpus.data import blobs


class EpochEndModel(L.LightningModule):
    def __init__(self, hidden: int = 10, lr: float = 0.02, step_size: int = 1):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(5, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        self.train_loss = MeanMetric()
        self.val_metrics = MetricCollection(
            {"acc": MulticlassAccuracy(2), "f1": MulticlassF1Score(2)}, prefix="val_"
        )
        self.val_loss = MeanMetric()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.train_loss.update(loss)
        return loss

    def on_train_epoch_end(self):
        self.log("train_loss", self.train_loss.compute())
        self.train_loss.reset()

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.val_loss.update(F.cross_entropy(logits, y))
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self):
        self.log("val_loss", self.val_loss.compute())
        self.log_dict(self.val_metrics.compute())
        self.val_loss.reset()
        self.val_metrics.reset()

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test_acc", (self.net(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, self.hparams.step_size, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


class SeededShuffle(L.LightningDataModule):
    def __init__(self, batch_size: int = 12):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        self.train = TensorDataset(*blobs(144, 5, seed=4))
        self.val = TensorDataset(*blobs(48, 5, seed=5))

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(11)
        return DataLoader(self.train, self.batch_size, shuffle=True, generator=generator)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=48)

    def test_dataloader(self):
        return DataLoader(self.val, batch_size=48)
