"""Every experiment config composes and runs its whole path (smoke tests, by design)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import trained
from lightning.pytorch.callbacks import Callback

from nnlab.train import CONFIG_DIR, build_run

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_under_fast_dev_run(config, tmp_path, tiny_mnist, experiment):
    images = experiment.startswith(("mnist", "fashion"))
    data = [f"paths.data_dir={tiny_mnist}", "data.download=false"] if images else []
    metrics = trained(config(f"experiment={experiment}", "debug=fdr", *data, analyse=True))
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["test/loss"])
    assert list((tmp_path / "run" / "figures").glob("*.png"))


def test_final_weights_are_validated_and_checkpointed_when_the_budget_ends_between_validations(
    config, tmp_path
):
    metrics = trained(config("experiment=rings", "trainer.max_steps=1250"))  # validation every 500
    checkpoints = tmp_path / "run" / "checkpoints"
    for name in ("last.ckpt", "best.ckpt"):
        assert torch.load(checkpoints / name, weights_only=False)["global_step"] == 1250
    last = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert last["callbacks"]  # a full checkpoint, to resume from
    assert metrics["val/loss"] == pytest.approx(float(_best_score(last)))


def _best_score(checkpoint: dict) -> float:
    (state,) = (v for k, v in checkpoint["callbacks"].items() if "'monitor': 'val/loss'" in k)
    return state["best_model_score"]


def test_many_steps_a_batch_end_exactly_at_the_budget_and_callbacks_see_each_step(config):
    class CountSteps(Callback):
        calls = 0

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            CountSteps.calls += 1

    run = build_run(config("experiment=rings", "trainer.max_steps=450", "logger=none"))
    run.trainer.callbacks.append(CountSteps())
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert run.task.steps_per_batch == 100  # the rings: 100 steps on each Lightning batch
    assert run.trainer.fit_loop.total_batch_idx + 1 == 5  # of 100, 100, 100, 100 and 50 steps
    assert CountSteps.calls == 450 and run.trainer.global_step == 450
    for parameter in run.task.network.parameters():
        assert run.trainer.optimizers[0].state[parameter]["step"].item() == 450


def test_relative_error_criterion_lowers_its_loss(config):
    run = build_run(
        config(
            "experiment=wave", "task.criterion=relative", "trainer.max_steps=2000", "logger=none"
        )
    )
    run.datamodule.setup()
    inputs, targets = run.datamodule.splits["val"]
    with torch.no_grad():
        before = run.task.model_step((inputs, targets))[0].item()
    run.trainer.fit(run.task, datamodule=run.datamodule)
    with torch.no_grad():
        after = run.task.model_step((inputs, targets))[0].item()
    assert (
        after < 0.8 * before
    )  # 0.68 -> 0.50: relative error is slow to optimise, as the notebook warns


def test_cosine_schedule_decays_once_over_the_whole_budget(config, tiny_mnist):
    overrides = [
        "experiment=mnist_mlp",
        "data.batch_size=16",
        "trainer.max_epochs=3",
        "logger=none",
    ]
    run = build_run(config(*overrides, f"paths.data_dir={tiny_mnist}", "data.download=false"))
    seen = []

    class RecordLr(Callback):
        def on_train_batch_end(self, trainer, *args):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    run.trainer.callbacks.append(RecordLr())
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert run.trainer.global_step == 3 * 23  # 360 training images in batches of 16
    assert all(later <= earlier for earlier, later in itertools.pairwise(seen))
    assert seen[-1] < 1e-6 < seen[0]


def test_the_same_seed_gives_identical_metrics_twice(config, tmp_path, tiny_mnist):
    overrides = [
        "experiment=mnist_cnn",
        "seed=7",
        "trainer.deterministic=true",
        "trainer.max_epochs=2",
    ]
    data = [
        f"paths.data_dir={tiny_mnist}",
        "data.download=false",
        "data.batch_size=16",
        "task.robustness=null",
    ]
    first = trained(config(*overrides, *data, f"paths.output_dir={tmp_path / 'first'}"))
    second = trained(config(*overrides, *data, f"paths.output_dir={tmp_path / 'second'}"))
    assert first == second  # exactly: same shuffles, same initial weights, deterministic kernels
    different = trained(
        config(
            *overrides[:1],
            "seed=8",
            *overrides[2:],
            *data,
            f"paths.output_dir={tmp_path / 'third'}",
        )
    )
    assert different["train/loss"] != first["train/loss"]
