"""The built-in tasks keep Lightning's standard contract, so the Trainer's options work.

`training_step` returns the loss and the Trainer steps the optimizer: gradient clipping and
accumulation are the Trainer's, `debug=overfit` overfits, train metrics cover the epoch, and
the progress bar counts optimizer steps. The full-batch tasks step their optimizer themselves
(Lightning's manual optimization); with `task.steps_per_batch=1` they are ordinary again.
"""

from __future__ import annotations

import math
from typing import ClassVar

import pytest
import torch
from conftest import trained
from lightning.pytorch.callbacks import Callback

from nnlab.train import build_run


class RecordingSGD(torch.optim.SGD):
    """SGD that records the norm of the gradients each of its steps applies."""

    norms: ClassVar[list[float]] = []

    def step(self, closure=None):
        if closure is not None:  # Lightning's steps compute the gradients in the closure
            with torch.enable_grad():
                closure()
        grads = [
            p.grad for group in self.param_groups for p in group["params"] if p.grad is not None
        ]
        RecordingSGD.norms.append(
            float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        )
        return super().step()


RECORDING_SGD = [
    "optimizer=sgd",
    "optimizer._target_=test_contract.RecordingSGD",
    "optimizer.momentum=0.0",
]


def image_config(config, tiny_mnist, *overrides):
    data = [f"paths.data_dir={tiny_mnist}", "data.download=false", "task.robustness=null"]
    return config("experiment=mnist_mlp", *data, "data.batch_size=32", *overrides)


def test_the_trainers_gradient_clipping_bounds_every_step_on_both_paths(config, tiny_mnist):
    RecordingSGD.norms = []
    run = build_run(image_config(config, tiny_mnist, *RECORDING_SGD, "trainer.max_epochs=1"))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    unclipped = max(RecordingSGD.norms)
    assert len(RecordingSGD.norms) == 12 and unclipped > 0.1  # 360 images in batches of 32

    RecordingSGD.norms = []
    clipped = [*RECORDING_SGD, "trainer.max_epochs=1", "trainer.gradient_clip_val=0.01"]
    run = build_run(image_config(config, tiny_mnist, *clipped))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert len(RecordingSGD.norms) == 12 and max(RecordingSGD.norms) <= 0.01 * (1 + 1e-5)

    RecordingSGD.norms = []  # the rings, one step per batch: the Trainer clips every step
    rings = ["experiment=rings", "trainer.max_steps=250", "trainer.gradient_clip_val=0.01"]
    one_step = [*rings, "task.steps_per_batch=1", "trainer.val_check_interval=100"]
    run = build_run(config(*one_step, *RECORDING_SGD, "optimizer.lr=1.0", "logger=none"))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert len(RecordingSGD.norms) == 250 and max(RecordingSGD.norms) <= 0.01 * (1 + 1e-5)


def test_the_trainers_clipping_is_refused_where_the_task_steps_its_optimizer_itself(cli):
    result = cli("experiment=rings", "+trainer.gradient_clip_val=0.01")  # 100 steps a batch
    assert result.returncode == 2 and "Traceback" not in result.stderr
    refused = "nnlab: bad config trainer: Automatic gradient clipping is not supported for manual"
    assert refused in result.stderr


def test_accumulated_gradients_take_one_optimizer_step_per_two_batches(config, tiny_mnist):
    RecordingSGD.norms = []
    overrides = [*RECORDING_SGD, "trainer.max_epochs=2", "trainer.accumulate_grad_batches=2"]
    run = build_run(image_config(config, tiny_mnist, *overrides, "logger=none"))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert run.trainer.global_step == len(RecordingSGD.norms) == 2 * 6  # 12 batches per epoch


def test_debug_overfit_trains_on_one_fixed_batch_until_its_loss_is_small(config, tiny_mnist):
    seen = []

    class RecordBatches(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch[1].tolist())

    run = build_run(image_config(config, tiny_mnist, "debug=overfit", "trainer.max_epochs=60"))
    run.trainer.callbacks.append(RecordBatches())
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert len(seen) == 60 and all(labels == seen[0] for labels in seen)  # one batch, unshuffled
    assert float(run.trainer.callback_metrics["train/loss"]) < 0.01


def test_train_metrics_describe_the_whole_epoch_not_its_last_batch(config, tiny_mnist):
    metrics = trained(image_config(config, tiny_mnist, "trainer.max_epochs=1", "logger=none"))
    correct = metrics["train/acc"] * 360  # 360 images; the last batch holds 8 of them
    assert abs(correct - round(correct)) < 1e-3


def test_the_progress_bar_counts_optimizer_steps_toward_max_steps(config, capsys):
    run = build_run(config("experiment=rings", "trainer.max_steps=2000", "logger=none"))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert "2,000/2,000 steps" in capsys.readouterr().out


def test_one_step_per_batch_makes_a_full_batch_task_an_ordinary_lightning_module(config):
    overrides = ["experiment=rings", "task.steps_per_batch=1", "trainer.max_steps=40"]
    run = build_run(config(*overrides, "logger=none"))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert run.task.automatic_optimization and run.trainer.global_step == 40
    assert run.trainer.fit_loop.total_batch_idx + 1 == 40


def test_an_epochs_loss_is_the_mean_over_its_examples_and_a_nan_stays_nan():
    from nnlab.tasks.rings import RingsTask

    task = RingsTask({"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 1})
    for loss, count in ((1.0, 3), (4.0, 1)):  # a partial last batch weighs by its examples
        preds = target = torch.zeros(count, dtype=torch.long)
        task.train_metrics.update(
            value=torch.tensor(loss), weight=count, preds=preds, target=target
        )
    assert float(task.train_metrics.compute()["train/loss"]) == pytest.approx(7 / 4)
    task.train_metrics.update(
        value=torch.tensor(float("nan")), weight=1, preds=preds, target=target
    )
    assert math.isnan(float(task.train_metrics.compute()["train/loss"]))
    saved = task.state_dict()  # the epoch under way is kept in checkpoints
    assert {"train_metrics.loss.mean_value", "train_metrics.acc.tp"} <= set(saved)


def test_an_optimizer_that_needs_a_closure_steps_the_full_batch_tasks(config):
    # LBFGS evaluates the loss several times a step: the full-batch tasks pass it a closure.
    overrides = ["experiment=rings", "trainer.max_steps=30", "logger=none"]
    lbfgs = ["optimizer._target_=torch.optim.LBFGS", "~optimizer.weight_decay", "optimizer.lr=1"]
    run = build_run(config(*overrides, *lbfgs))
    run.datamodule.setup()
    before = float(run.task.model_step(run.datamodule.splits["train"])[0])
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert run.trainer.global_step == 30
    assert float(run.task.model_step(run.datamodule.splits["train"])[0]) < 0.5 * before
