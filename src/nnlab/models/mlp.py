"""The notebook's ClassifierNet, generalised: any depth, a width per layer, any activation."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from nnlab.checks import MAX_LAYERS, BadValue, check_choice, check_int

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}


class MLP(nn.Module):
    """Fully connected layers with one activation between them and a linear output.

    The output is raw (logits for classification, values for regression): the task's loss
    applies the output non-linearity, as the notebook recommends for numerical stability.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden_layers: int = 1,
        hidden_nodes: int | Sequence[int] = 3,
        activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("out_features", out_features, minimum=1)
        check_int("hidden_layers", hidden_layers, minimum=0)
        if hidden_layers > MAX_LAYERS:
            raise BadValue("hidden_layers", hidden_layers, f"expected at most {MAX_LAYERS:,}")
        check_choice("activation", activation, ACTIVATIONS)
        self.in_features = in_features
        self.widths = _layer_widths(hidden_nodes, hidden_layers)
        sizes = [in_features, *self.widths]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.activation = ACTIVATIONS[activation]()
        self.output = nn.Linear(sizes[-1], out_features)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        features = inputs.flatten(1)  # images (n, 1, 28, 28) -> (n, 784); (n, 2) stays as it is
        for layer in self.hidden:
            features = self.activation(layer(features))
        return self.output(features)

    def hidden_activations(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's activations, (batch, width) each: the network's new coordinates."""
        activations, features = [], inputs.flatten(1)
        for layer in self.hidden:
            features = self.activation(layer(features))
            activations.append(features)
        return activations


def _layer_widths(hidden_nodes: int | Sequence[int], hidden_layers: int) -> list[int]:
    if isinstance(hidden_nodes, Sequence) and not isinstance(hidden_nodes, str):
        widths = [check_int(f"hidden_nodes[{i}]", n, minimum=1) for i, n in enumerate(hidden_nodes)]
        if len(widths) != hidden_layers:
            raise BadValue(
                "hidden_nodes",
                list(hidden_nodes),
                f"a list needs one width per hidden layer (hidden_layers={hidden_layers})",
            )
        return widths
    if isinstance(hidden_nodes, bool) or not isinstance(hidden_nodes, int) or hidden_nodes < 1:
        raise BadValue(
            "hidden_nodes", hidden_nodes, "expected a positive integer, or a list of them per layer"
        )
    return [hidden_nodes] * hidden_layers
