"""Bad config values stop the run before training, with one message naming the key and the value."""

from __future__ import annotations

import pytest
import torch
from conftest import read_metrics, run_dirs


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.hidden_nodes=0", "model.hidden_nodes=0: expected a positive integer"),
        ("model.hidden_nodes=-3", "model.hidden_nodes=-3: expected a positive integer"),
        (
            "model.activation=sigmod",
            "model.activation='sigmod': expected one of: sigmoid, relu, tanh",
        ),
        ("optimizer.lr=0", "optimizer.lr=0: expected a number > 0"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: expected a number > 0"),
        ("trainer.max_steps=-5", "trainer.max_steps=-5: expected an integer >= 1"),
        ("+model.hidden_size=4", "model.hidden_size=4: unknown key; MLP takes: in_features"),
        ("data.train_per_class=zero", "data.train_per_class='zero': expected an integer"),
    ],
)
def test_bad_value_stops_with_one_clear_message(cli, tmp_path, override, expected):
    result = cli("experiment=rings", override)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (run_dir,) = run_dirs(tmp_path / "logs")
    assert read_metrics(run_dir)["status"].startswith(f"failed: bad config {expected}")
    assert not (run_dir / "checkpoints").exists()  # stopped before training


def test_unknown_key_without_plus_is_refused_by_hydra(cli):
    result = cli("experiment=rings", "model.hidden_size=4")
    assert result.returncode != 0
    assert "model.hidden_size" in result.stderr and "Traceback" not in result.stderr


def test_unknown_experiment_lists_the_available_ones(cli):
    result = cli("experiment=ringz")
    assert result.returncode != 0
    assert "ringz" in result.stderr and "rings" in result.stderr and "wave" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_says_what_to_use(cli):
    result = cli("experiment=rings", "trainer=gpu")
    assert result.returncode == 2
    assert "bad config trainer.accelerator='gpu': torch sees no CUDA GPU" in result.stderr
    assert "trainer=cpu" in result.stderr and "Traceback" not in result.stderr
