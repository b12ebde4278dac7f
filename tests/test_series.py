"""The series task: a chronological split, training-range scaling, the scratch cell, rollouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import trained
from torch import nn

from nnlab.data.series import SeriesDataModule
from nnlab.models.recurrent import ScratchRNN, StepForecaster, forecaster
from nnlab.tasks.series import SeriesTask


def test_split_is_chronological_and_targets_never_overlap():
    data = SeriesDataModule(
        length=400, window=20, lag=2, horizon=3, val_fraction=0.2, test_fraction=0.2
    )
    data.setup()
    for split, (first, end) in data.ranges.items():
        targets = data.targets_at[split]
        assert (
            targets.min() >= first and targets.max() + data.horizon - 1 < end
        )  # every horizon step
    assert (
        data.ranges["train"][1] == data.ranges["val"][0]
        and data.ranges["val"][1] == data.ranges["test"][0]
    )
    inputs, _, horizon_targets, base = data.splits["val"]
    first_window = data.targets_at["val"][0] - data.lag  # the index of the window's last input
    assert base[0].item() == pytest.approx(data.series[first_window])
    assert inputs.shape == (len(base), 20, 1) and horizon_targets.shape == (len(base), 3)


def test_scaling_uses_the_training_range_only():
    data = SeriesDataModule(
        generator="linear", length=300, noise=0.5, val_fraction=0.2, test_fraction=0.2
    )
    data.setup()
    train_end = data.ranges["train"][1]
    assert data.scaler.mean == pytest.approx(data.series[:train_end].mean())
    assert data.scaler.std == pytest.approx(data.series[:train_end].std())
    assert abs(data.scaler.mean - data.series.mean()) > 50  # the trend: the whole series differs
    differenced = SeriesDataModule(generator="linear", length=300, noise=0.5, difference=True)
    differenced.setup()
    assert differenced.scaler.mean == pytest.approx(
        np.diff(differenced.series[: differenced.ranges["train"][1]]).mean()
    )


def test_differenced_horizon_targets_are_one_step_changes_as_the_decoder_feeds_them_back():
    # 4 + 3t without noise: every one-step change is 3, so every horizon target must be 3
    data = SeriesDataModule(generator="linear", noise=0.0, horizon=4, difference=True)
    data.setup()
    _, _, horizon_targets, _ = data.splits["test"]
    in_steps = horizon_targets.double() * data.scaler.std + data.scaler.mean
    assert torch.allclose(in_steps, torch.full_like(in_steps, 3.0), atol=1e-4)


def test_training_windows_come_shuffled_in_batches_and_evaluation_takes_each_split_whole():
    data = SeriesDataModule(length=400, batch_size=16)
    data.setup()
    loader = data.train_dataloader()
    batches = list(loader)
    windows = len(data.targets_at["train"])
    assert len(batches) == len(loader) == -(-windows // 16)
    assert sum(len(batch[0]) for batch in batches) == windows
    loader.sampler.set_epoch(1)  # as Lightning does at each epoch
    assert not torch.equal(batches[0][0], next(iter(loader))[0])  # a new order each epoch
    (val,) = list(data.val_dataloader())
    assert len(val[0]) == len(data.targets_at["val"])


def test_scratch_cell_equals_torch_rnn_with_the_same_weights():
    torch.manual_seed(0)
    scratch, reference = ScratchRNN(1, 8, "tanh"), nn.RNN(1, 8, batch_first=True)
    with torch.no_grad():
        reference.weight_ih_l0.copy_(scratch.w_hx)
        reference.weight_hh_l0.copy_(scratch.w_hh)
        reference.bias_ih_l0.copy_(scratch.b_h)
        reference.bias_hh_l0.zero_()
    inputs = torch.randn(5, 17, 1)
    assert torch.allclose(scratch(inputs), reference(inputs)[0], atol=1e-6)


def test_a_short_run_beats_persistence_on_an_easy_series(config):
    """Its error over persistence's: 0.9-1.0 untrained, 0.6-0.7 after 20 steps, 0.12 after
    300 (seeds 0-2; 0.07 after 1,500)."""
    metrics = trained(
        config(
            "experiment=series_rnn",
            "data.noise=0.02",
            "trainer.max_steps=300",
            "logger=none",
            analyse=True,  # the baselines' errors
        )
    )
    assert metrics["test/mse"] < 0.25 * metrics["test/persistence_mse"]
    assert np.isfinite(metrics["test/rollout_mse"]) and np.isfinite(metrics["test/linear_mse"])


def test_rollout_feeds_each_prediction_back_as_the_next_input():
    data = SeriesDataModule(
        generator="sine", length=300, window=10, val_fraction=0.2, test_fraction=0.2
    )
    data.setup()

    class PlusOne(StepForecaster):
        """Predicts, at every step, its input plus one (in the model's scaled space)."""

        def forward(self, inputs):
            return inputs.squeeze(-1) + 1

    task = SeriesTask(PlusOne("rnn", 2, 1, "tanh"))
    task.scaler = data.scaler
    levels = task.rollout(data)
    start = data.ranges["test"][0]
    last = data.model_inputs[start - 1]
    # fed back, the k-th prediction is the last true input plus k; with true inputs it would
    # be each true value plus one
    expected = (last + np.arange(1, len(levels) + 1)) * data.scaler.std + data.scaler.mean
    assert len(levels) == data.length - start
    assert np.allclose(levels, expected, atol=1e-3)


def test_encoder_decoder_forecasts_several_steps(config):
    """It learns the 5 steps: its test loss is 1.02 untrained, 0.75-0.77 after 100 steps
    (seeds 0-1), 0.71 after 300."""
    overrides = [
        "experiment=series_rnn",
        "model.cell=seq2seq",
        "data.horizon=5",
        "trainer.max_steps=100",
    ]
    metrics = trained(config(*overrides, "logger=none", analyse=True))
    assert metrics["test/loss"] < 0.85
    assert np.isfinite(metrics["test/mse"]) and np.isfinite(metrics["test/rollout_mse"])
    network = forecaster("seq2seq", hidden_size=4, horizon=5)
    window, teacher = torch.randn(2, 7, 1), torch.randn(2, 5)
    assert network(window).shape == network(window, teacher).shape == (2, 5)


def test_series_configs_that_cannot_work_are_refused(cli):
    result = cli("experiment=series_rnn", "data.window=2000")
    assert result.returncode == 2 and "bad config data.window=2000: too long" in result.stderr
    result = cli("experiment=series_rnn", "model.cell=gruu")
    assert result.returncode == 2
    assert "model.cell='gruu': expected one of: scratch, rnn, lstm, gru, seq2seq" in result.stderr


def test_a_series_too_long_for_the_memory_is_refused_before_it_is_drawn():
    from nnlab.checks import BadValue

    with pytest.raises(BadValue, match=r"^length=10000000000: 10,000,000,000 windows of 31 "):
        SeriesDataModule(length=10**10)
