"""Perturbed copies of test images, for the notebook's "test stability" questions."""

from __future__ import annotations

import torch

KINDS = ("rotate", "shift", "noise")
UNITS = {
    "rotate": "degrees",
    "shift": "pixels",
    "noise": "std, pixels in [0, 1]",
}


def perturb(
    images: torch.Tensor, kind: str, strength: float, generator: torch.Generator
) -> torch.Tensor:
    """A perturbed copy of (n, 1, h, w) images in [0, 1].

    rotate: by `strength` degrees, counter-clockwise, about the centre;
    shift: by `strength` pixels right and `strength` down (what leaves the frame is lost);
    noise: plus Gaussian noise of std `strength`, clipped to [0, 1].
    """
    from torchvision.transforms.v2 import functional as F

    if kind == "rotate":
        return F.rotate(images, angle=float(strength))
    if kind == "shift":
        pixels = round(strength)
        return F.affine(images, angle=0.0, translate=[pixels, pixels], scale=1.0, shear=[0.0, 0.0])
    if kind == "noise":
        noise = torch.randn(images.shape, generator=generator).to(images.device)
        return (images + strength * noise).clamp_(0, 1)
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {KINDS}")
