"""The MLP's shapes, and the clear errors of its bad arguments."""

from __future__ import annotations

import pytest
import torch

from nnlab.checks import BadValue
from nnlab.models.mlp import MLP


def test_hidden_nodes_list_sets_each_layers_width():
    network = MLP(
        in_features=2, out_features=1, hidden_layers=2, hidden_nodes=[8, 4], activation="relu"
    )
    assert [layer.out_features for layer in network.hidden] == [8, 4]
    activations = network.hidden_activations(torch.zeros(5, 2))
    assert [a.shape for a in activations] == [(5, 8), (5, 4)]
    assert network(torch.zeros(5, 2)).shape == (5, 1)


def test_zero_hidden_layers_is_a_linear_model():
    network = MLP(in_features=2, out_features=1, hidden_layers=0)
    assert network.widths == [] and sum(p.numel() for p in network.parameters()) == 3


@pytest.mark.parametrize(
    ("arguments", "key", "expected"),
    [
        ({"hidden_nodes": 0}, "hidden_nodes", "positive integer"),
        ({"hidden_nodes": [4, 0], "hidden_layers": 2}, "hidden_nodes[1]", ">= 1"),
        (
            {"hidden_nodes": [4, 4], "hidden_layers": 1},
            "hidden_nodes",
            "one width per hidden layer",
        ),
        ({"activation": "sigmod"}, "activation", "sigmoid, relu, tanh, leaky_relu, gelu, identity"),
        ({"hidden_layers": -1}, "hidden_layers", ">= 0"),
    ],
)
def test_bad_arguments_name_the_key_and_what_is_allowed(arguments, key, expected):
    with pytest.raises(BadValue) as error:
        MLP(in_features=2, out_features=1, **arguments)
    assert error.value.key == key
    assert expected in str(error.value)
