"""Two optimizers under manual optimization, as Lightning's GAN example trains them: a
generator learns to draw from a 2-d Gaussian around (2, 2)."""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class GAN(L.LightningModule):
    def __init__(self, latent: int = 4, lr: float = 0.002):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(latent, 16), nn.ReLU(), nn.Linear(16, 2))
        self.discriminator = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        (real,) = batch
        g_opt, d_opt = self.optimizers()
        noise = torch.randn(real.size(0), self.hparams.latent, device=self.device)
        fake = self.generator(noise)

        ones, zeros = torch.ones(real.size(0), 1), torch.zeros(real.size(0), 1)
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        g_opt.zero_grad()
        self.manual_backward(g_loss)
        g_opt.step()

        real_loss = F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
        fake_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        d_loss = (real_loss + fake_loss) / 2
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        self.log_dict({"g_loss": g_loss, "d_loss": d_loss}, prog_bar=True)

    def validation_step(self, batch, batch_idx):
        (real,) = batch
        fake = self.generator(torch.randn(real.size(0), self.hparams.latent, device=self.device))
        self.log("val_loss", (fake.mean(0) - real.mean(0)).pow(2).sum())

    def configure_optimizers(self):
        lr = self.hparams.lr
        return [
            torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.5, 0.999)),
            torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999)),
        ]


class GaussianData(L.LightningDataModule):
    def __init__(self, batch_size: int = 32):
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        generator = torch.Generator().manual_seed(0)
        self.points = torch.randn(256, 2, generator=generator) * 0.5 + 2

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.points), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.points[:64]), batch_size=64)
