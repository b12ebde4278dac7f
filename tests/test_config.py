"""build(): config nodes into objects, with the node's path in every error."""

from __future__ import annotations

import functools

import pytest
from omegaconf import OmegaConf

from nnlab.config import build
from nnlab.errors import ConfigError


def test_nested_targets_are_built_first():
    node = OmegaConf.create(
        {
            "_target_": "lightning.pytorch.Trainer",
            "logger": False,
            "profiler": {"_target_": "lightning.pytorch.profilers.SimpleProfiler"},
        }
    )
    trainer = build(node, "trainer")
    assert type(trainer.profiler).__name__ == "SimpleProfiler"


def test_partial_nodes_become_partials():
    optimizer = build(
        OmegaConf.create({"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5}), "optimizer"
    )
    assert isinstance(optimizer, functools.partial) and optimizer.keywords == {"lr": 0.5}


def test_errors_name_the_nested_key():
    node = OmegaConf.create(
        {
            "_target_": "torch.nn.Sequential",
            "first": {"_target_": "nnlab.models.mlp.MLP", "in_features": 0, "out_features": 1},
        }
    )
    with pytest.raises(ConfigError) as error:
        build(node, "model")
    assert str(error.value) == "bad config model.first.in_features=0: expected an integer >= 1"


def test_unknown_keys_follow_kwargs_to_the_base_class():
    node = OmegaConf.create({"_target_": "nnlab.tasks.wave.WaveTask", "lr_shedule": "cosine"})
    with pytest.raises(ConfigError) as error:
        build(node, "task", network=None)
    message = str(error.value)
    assert "task.lr_shedule='cosine': unknown key; WaveTask takes: network, criterion" in message
    assert "lr_schedule" in message  # an argument of the base class Task
