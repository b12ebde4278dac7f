"""Autoencoders: the notebook's dense one, and a convolutional one (its "future item").

Both expose `encode`, whose codes the similarity search compares, and `decode`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.checks import BadValue, check_choice, check_int

OUTPUT_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "identity": nn.Identity}


class Autoencoder(nn.Module):
    """Flatten, 784 -> code_size with ReLU, code_size -> 784 with a sigmoid, back to image shape.

    The sigmoid matches pixels in [0, 1]; with data.normalize=true use output_activation=identity.
    """

    def __init__(
        self,
        image_size: int = 28,
        in_channels: int = 1,
        code_size: int = 50,
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        check_int("image_size", image_size, minimum=1)
        check_int("in_channels", in_channels, minimum=1)
        check_int("code_size", code_size, minimum=1)
        check_choice("output_activation", output_activation, OUTPUT_ACTIVATIONS)
        self.shape = (in_channels, image_size, image_size)
        pixels = in_channels * image_size * image_size
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(pixels, code_size), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.Linear(code_size, pixels),
            OUTPUT_ACTIVATIONS[output_activation](),
            nn.Unflatten(1, self.shape),
        )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(codes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))


class ConvAutoencoder(Autoencoder):
    """Stride-2 3x3 convolutions halve the image per entry of `channels` (28 -> 14 -> 7), a linear
    layer makes the code; transposed convolutions mirror them back."""

    def __init__(
        self,
        image_size: int = 28,
        in_channels: int = 1,
        code_size: int = 50,
        channels: Sequence[int] = (16, 32),
        output_activation: str = "sigmoid",
    ) -> None:
        super().__init__(image_size, in_channels, code_size, output_activation)
        widths = [check_int(f"channels[{i}]", c, minimum=1) for i, c in enumerate(channels)]
        if not widths or image_size % 2 ** len(widths):
            raise BadValue(
                "channels", list(channels), f"{image_size} must halve {len(widths)} times"
            )
        side = image_size // 2 ** len(widths)
        inner = (widths[-1], side, side)
        down: list[nn.Module] = []
        for previous, width in zip([in_channels, *widths], widths, strict=False):
            down += [nn.Conv2d(previous, width, 3, stride=2, padding=1), nn.ReLU()]
        up: list[nn.Module] = []
        for width, following in zip(widths[::-1], [*widths[-2::-1], in_channels], strict=True):
            up += [
                nn.ConvTranspose2d(width, following, 3, stride=2, padding=1, output_padding=1),
                nn.ReLU(),
            ]
        up[-1] = OUTPUT_ACTIVATIONS[output_activation]()
        flat = widths[-1] * side * side
        self.encoder = nn.Sequential(*down, nn.Flatten(), nn.Linear(flat, code_size), nn.ReLU())
        self.decoder = nn.Sequential(
            nn.Linear(code_size, flat), nn.ReLU(), nn.Unflatten(1, inner), *up
        )
