"""Every experiment config composes and runs its whole path (smoke tests, by design)."""

from __future__ import annotations

import math

import pytest

from nnlab.train import CONFIG_DIR, train

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_under_fast_dev_run(config, tmp_path, experiment):
    metrics = train(config(f"experiment={experiment}", "debug=fdr"))
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/loss"])
    assert list((tmp_path / "run" / "figures").glob("*.png"))


def test_budget_is_exact_when_batches_hold_several_steps(config):
    from nnlab.train import build_run

    run = build_run(
        config("experiment=rings", "trainer.max_steps=250", "logger=none", "callbacks=none")
    )
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert run.trainer.global_step == 250  # 100 + 100 + 50
    for name, parameter in run.task.network.named_parameters():
        assert run.trainer.optimizers[0].state[parameter]["step"].item() == 250, name
