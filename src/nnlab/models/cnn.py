"""The notebook's image_conv_net: blocks of 3x3 convolution, activation and 2x2 max-pooling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnlab.checks import BadValue, check_choice, check_int
from nnlab.models.mlp import ACTIVATIONS


class ConvNet(nn.Module):
    """conv -> activation -> max-pool per entry of `channels`, then one linear layer to the classes.

    The notebook's net is channels (16, 64, 128) with no padding: 28 -> 26 -> 13 -> 11 -> 5 -> 3
    -> 1 pixels, so the last block sees the whole image as one 128-vector. `padding=1` keeps
    more of each map (28 -> 14 -> 7 -> 3) for a larger final layer.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (16, 64, 128),
        kernel_size: int = 3,
        padding: int = 0,
        num_classes: int = 10,
        image_size: int = 28,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels, minimum=1)
        widths = [check_int(f"channels[{i}]", c, minimum=1) for i, c in enumerate(channels)]
        check_int("kernel_size", kernel_size, minimum=1)
        check_int("padding", padding, minimum=0)
        check_int("num_classes", num_classes, minimum=2)
        check_int("image_size", image_size, minimum=1)
        check_choice("activation", activation, ACTIVATIONS)
        layers: list[nn.Module] = []
        for previous, width in zip([in_channels, *widths], widths, strict=False):
            layers += [
                nn.Conv2d(previous, width, kernel_size, padding=padding),
                ACTIVATIONS[activation](),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            try:
                flat = self.features(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
            except RuntimeError:
                raise BadValue(
                    "channels",
                    list(channels),
                    f"too many blocks for {image_size}x{image_size} images with kernel_size "
                    f"{kernel_size} and padding {padding}",
                ) from None
        self.classifier = nn.Linear(flat, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))
