"""Synthetic data for the corpus: two Gaussian blobs in `features` dimensions."""

from __future__ import annotations

import torch


def blobs(count: int, features: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` points, half around +0.5 and half around -0.5 in every dimension (noise 1)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 2
    centres = (labels.float() - 0.5).unsqueeze(1).expand(count, features)
    return centres + torch.randn(count, features, generator=generator), labels
