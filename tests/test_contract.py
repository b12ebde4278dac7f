"""The built-in tasks keep Lightning's standard contract, so the Trainer's options work.

`training_step` returns the loss and the Trainer steps the optimizer: gradient clipping and
accumulation are the Trainer's, `debug=overfit` overfits, train metrics cover the epoch, and
the progress bar counts optimizer steps. The full-batch tasks' opt-in (several steps per
batch) keeps clipping, and refuses what it cannot honour.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch
from conftest import trained
from lightning.pytorch.callbacks import Callback

from nnlab.run import build_run


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
    clipped = [*RECORDING_SGD, "trainer.max_epochs=1", "+trainer.gradient_clip_val=0.01"]
    run = build_run(image_config(config, tiny_mnist, *clipped))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert len(RecordingSGD.norms) == 12 and max(RecordingSGD.norms) <= 0.01 * (1 + 1e-5)

    RecordingSGD.norms = []  # the rings' 100 steps per batch: 99 outside Lightning, all clipped
    rings = ["experiment=rings", "trainer.max_steps=250", "+trainer.gradient_clip_val=0.01"]
    run = build_run(config(*rings, *RECORDING_SGD, "optimizer.lr=1.0", "logger=none"))
    run.trainer.fit(run.task, datamodule=run.datamodule)
    assert len(RecordingSGD.norms) == 250 and max(RecordingSGD.norms) <= 0.01 * (1 + 1e-5)


def test_accumulated_gradients_take_one_optimizer_step_per_two_batches(config, tiny_mnist):
    RecordingSGD.norms = []
    overrides = [*RECORDING_SGD, "trainer.max_epochs=2", "+trainer.accumulate_grad_batches=2"]
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
    assert run.trainer.global_step == 40 and run.trainer.fit_loop.total_batch_idx + 1 == 40


def test_metrics_given_batches_together_equal_metrics_updated_at_every_batch():
    from torchmetrics import MeanMetric
    from torchmetrics.classification import MulticlassAccuracy

    from nnlab.tasks.base import StageMetrics

    held = StageMetrics(acc=MulticlassAccuracy(3, average="micro"))
    loss_each, acc_each = MeanMetric(), MulticlassAccuracy(3, average="micro")
    generator, seen = torch.Generator().manual_seed(0), 0
    for batch in range(2 * StageMetrics.HELD_BATCHES + 5):  # two whole groups and a part
        size = int(torch.randint(1, 9, (1,), generator=generator))
        preds, target = torch.randint(0, 3, (2, size), generator=generator)
        loss = torch.rand((), generator=generator)
        held.update("train", loss, size, preds=preds, target=target)
        loss_each.update(loss, weight=size)
        acc_each.update(preds, target)
        seen += size
        if batch == StageMetrics.HELD_BATCHES + 3:  # a checkpoint mid-group keeps every batch
            assert float(held.state("train")["loss"]["weight"]) == seen
    values = held.compute("train")
    assert float(values["train/loss"]) == pytest.approx(float(loss_each.compute()), rel=1e-6)
    assert float(values["train/acc"]) == float(acc_each.compute())
    # Arguments without a row per example, or whose rows change shape, are not concatenated.
    scalar = StageMetrics(mean=MeanMetric())
    for value in (1.0, 2.0, 6.0):
        scalar.update("val", torch.tensor(value), 1, value=torch.tensor(value))
    assert float(scalar.compute("val")["val/mean"]) == 3.0
    padded, mean_each = StageMetrics(mean=MeanMetric()), MeanMetric()
    for length in (5, 7, 7, 3):  # sequences padded to each batch's own length
        values = torch.rand(4, length, generator=generator)
        padded.update("val", values.mean(), 4, value=values)
        mean_each.update(values)
    assert float(padded.compute("val")["val/mean"]) == pytest.approx(float(mean_each.compute()))
    # Counts are exact whatever the loss's dtype (bfloat16 holds 256, not 257).
    low = StageMetrics()
    low.update("train", torch.tensor(1.0, dtype=torch.bfloat16), 257)
    low.update("train", torch.tensor(2.0, dtype=torch.bfloat16), 1)
    assert float(low.compute("train")["train/loss"]) == pytest.approx(259 / 258)
