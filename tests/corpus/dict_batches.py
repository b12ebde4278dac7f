"""Dict batches from a Dataset class, `log_dict`, torchmetrics attributes computed in
`on_validation_epoch_end`, and a DataModule with `prepare_data`, `setup(stage)` and all four
loaders (train, val, test, predict), whose training sampler is a RandomSampler with a seeded
generator of its own."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler

from corpus.data import blobs


class Points(Dataset):
    def __init__(self, count: int, seed: int):
        self.x, self.y = blobs(count, 6, seed)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, index):
        return {"features": self.x[index], "label": self.y[index]}


class DictModel(L.LightningModule):
    def __init__(self, hidden: int = 12, lr: float = 0.005):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        self.val_accuracy = torchmetrics.Accuracy(task="multiclass", num_classes=2)
        self.val_f1 = torchmetrics.F1Score(task="multiclass", num_classes=2)

    def training_step(self, batch, batch_idx):
        logits = self.net(batch["features"])
        loss = F.cross_entropy(logits, batch["label"])
        self.log_dict({"loss/train": loss, "lr": self.trainer.optimizers[0].param_groups[0]["lr"]})
        return {"loss": loss}

    def validation_step(self, batch, batch_idx):
        logits = self.net(batch["features"])
        self.val_accuracy.update(logits, batch["label"])
        self.val_f1.update(logits, batch["label"])
        self.log("val_loss", F.cross_entropy(logits, batch["label"]))

    def on_validation_epoch_end(self):
        self.log_dict({"val_acc": self.val_accuracy.compute(), "val_f1": self.val_f1.compute()})
        self.val_accuracy.reset()
        self.val_f1.reset()

    def test_step(self, batch, batch_idx):
        logits = self.net(batch["features"])
        self.log("test_acc", (logits.argmax(1) == batch["label"]).float().mean())

    def predict_step(self, batch, batch_idx):
        return self.net(batch["features"]).argmax(1)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        steps = self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, self.hparams.lr, total_steps=steps
        )
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]


class FourLoaders(L.LightningDataModule):
    def __init__(self, batch_size: int = 20, seed: int = 7):
        super().__init__()
        self.save_hyperparameters()
        self.prepared = False

    def prepare_data(self):
        self.prepared = True  # where a download would go

    def setup(self, stage: str):
        if stage == "fit":
            self.train, self.val = Points(240, 0), Points(80, 1)
        if stage in ("test", "predict"):
            self.test = Points(80, 2)

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(self.hparams.seed)
        sampler = RandomSampler(self.train, generator=generator)
        return DataLoader(self.train, batch_size=self.hparams.batch_size, sampler=sampler)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=40)

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=40)

    def predict_dataloader(self):
        return DataLoader(self.test, batch_size=40)
