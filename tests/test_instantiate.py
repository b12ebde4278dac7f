"""Hydra instantiates every object; nnlab's wrapper names the config key in every error."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from nnlab.errors import ConfigError
from nnlab.run.build import build


def built(key: str, node: dict):
    return build(OmegaConf.create({key: node}), key)


def test_hydra_builds_nested_targets_and_partials():
    node = {
        "_target_": "lightning.pytorch.Trainer",
        "logger": False,
        "profiler": {"_target_": "lightning.pytorch.profilers.SimpleProfiler"},
    }
    assert type(built("trainer", node).profiler).__name__ == "SimpleProfiler"
    make = built("optimizer", {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.5})
    assert make.keywords == {"lr": 0.5}


def test_a_constructors_bad_value_is_named_under_the_nested_key():
    node = {
        "_target_": "builtins.dict",
        "first": {"_target_": "nnlab.models.mlp.MLP", "in_features": 0, "out_features": 1},
    }
    with pytest.raises(ConfigError) as error:
        built("model", node)
    assert str(error.value) == "bad config model.first.in_features=0: expected an integer >= 1"


def test_an_error_reached_through_an_interpolation_is_named_where_the_value_lives():
    cfg = OmegaConf.create(
        {
            "model": {"_target_": "nnlab.models.mlp.MLP", "in_features": 2, "out_features": 1},
            "task": {
                "_target_": "nnlab.tasks.rings.RingsTask",
                "_recursive_": False,
                "_convert_": "all",
                "network": "${model}",
                "optimizer": "${optimizer}",
            },
            "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": -1.0},
        }
    )
    with pytest.raises(ConfigError, match=r"^bad config optimizer.lr=-1.0: expected a number > 0$"):
        build(cfg, "task")
    cfg.optimizer.lr = 0.1
    cfg.model.width = 4
    with pytest.raises(ConfigError) as error:
        build(cfg, "task")
    message = str(error.value)
    assert message.startswith("bad config model.width=4: unknown key; MLP takes: in_features")


def test_unknown_keys_follow_kwargs_to_the_base_class_and_a_close_one_is_named():
    node = {"_target_": "torch.optim.AdamW", "_partial_": False, "lr_shedule": "cosine"}
    with pytest.raises(ConfigError) as error:
        built("optimizer", node)
    assert "optimizer.lr_shedule='cosine': unknown key; AdamW takes: params, lr" in str(error.value)
    trainer = {"_target_": "lightning.pytorch.Trainer", "gradient_clip_va": 1.0}
    with pytest.raises(ConfigError, match=r"\(did you mean gradient_clip_val\?\)"):
        built("trainer", trainer)


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("task", "LightningModule"),
        ("data", "LightningDataModule"),
        ("logger.tensorboard", "Logger"),
        ("callbacks.model_checkpoint", "Callback"),
    ],
)
def test_a_target_that_builds_something_else_than_its_place_needs_is_a_config_error(key, kind):
    cfg = OmegaConf.create()
    OmegaConf.update(cfg, key, {"_target_": "builtins.dict"})
    with pytest.raises(ConfigError) as error:  # it failed inside Lightning, with a traceback
        build(cfg, key)
    expected = f"bad config {key}._target_='builtins.dict': builds a dict, not a {kind}"
    assert str(error.value) == expected


def test_a_target_that_does_not_import_says_why():
    with pytest.raises(ConfigError) as error:
        built("optimizer", {"_target_": "torch.optim.Nope", "_partial_": True})
    assert str(error.value) == (
        "bad config optimizer._target_='torch.optim.Nope': cannot be imported "
        "(module torch.optim has no Nope)"
    )


def test_a_third_party_refusal_is_a_config_error_and_a_bug_in_nnlab_is_not():
    with pytest.raises(ConfigError, match=r"bad config callbacks.x: `mode` can be min"):
        checkpoint = {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "mode": "max!"}
        build(OmegaConf.create({"callbacks": {"x": checkpoint}}), "callbacks.x")
    with pytest.raises(ZeroDivisionError):  # a plain bug keeps its traceback
        built("x", {"_target_": "operator.truediv", "_args_": [1, 0]})
