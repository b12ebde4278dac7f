"""The private attributes nnlab uses (nnlab/internals.py) are where nnlab expects them.

A Lightning, torch or Hydra upgrade that moves one fails here, naming it, rather than as a
wrong step count or a missing HPARAMS entry somewhere else.
"""

from __future__ import annotations

from typing import ClassVar

import lightning as L
import torch
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from nnlab import internals


class OneParameter(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)))


def test_counting_an_optimizer_step_moves_global_step_and_the_budget():
    counted = []

    class CountTwice(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            internals.count_optimizer_step(trainer)  # one step more than Lightning took
            counted.append(trainer.global_step)

    trainer = L.Trainer(
        max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[CountTwice()],
    )  # fmt: skip
    trainer.fit(OneParameter())
    assert counted == [2, 4, 6]  # three batches reach the budget of six steps


def test_the_summary_writers_file_writer_takes_raw_summaries(tmp_path):
    writer = SummaryWriter(tmp_path)
    internals.file_writer(writer).add_summary(torch.utils.tensorboard.summary.scalar("x", 1.5))
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [event.value for event in events.Scalars("x")] == [1.5]


class RecordRunStart(Callback):
    """A Hydra callback that notes the config it was started with."""

    seen: ClassVar[list[str]] = []

    def on_run_start(self, config, **kwargs):
        RecordRunStart.seen.append(config.name)


def test_hydras_callbacks_are_built_from_a_config_and_called():
    target = f"{__name__}.RecordRunStart"
    cfg = OmegaConf.create({"name": "run-7", "hydra": {"callbacks": {"x": {"_target_": target}}}})
    internals.hydra_callbacks(cfg).on_run_start(config=cfg, config_name="train")
    assert RecordRunStart.seen == ["run-7"]


def test_a_failed_hydra_job_keeps_its_exception_and_hydras_grid_is_there():
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import JobReturn, JobStatus

    failed, completed = JobReturn(), JobReturn()
    error = ValueError("boom")
    failed.return_value, failed.status = error, JobStatus.FAILED
    completed.return_value, completed.status = {"val/acc": 1.0}, JobStatus.COMPLETED
    assert internals.job_error(failed) is error and internals.job_error(completed) is None
    overrides = OverridesParser.create().parse_overrides(["a=1,2", "b=x,y", "c=3"])
    (batch,) = internals.hydra_grid(overrides, None)
    assert len(batch) == 4 and ["a=1", "b=x", "c=3"] in batch


def test_hydras_argument_parser_splits_flags_from_overrides():
    parsed = internals.hydra_argument_parser().parse_args(["--cfg", "job", "-m", "a=1", "b=2"])
    assert (parsed.cfg, parsed.multirun, parsed.overrides) == ("job", True, ["a=1", "b=2"])


def test_pending_loader_states_reach_the_loaders_of_a_resumed_fit(tmp_path):
    class Remembers(torch.utils.data.DataLoader):
        loaded: ClassVar[list[dict]] = []

        def state_dict(self):
            return {"at": 3}

        def load_state_dict(self, state):
            self.loaded.append(state)

    class Resumed(OneParameter):
        def configure_optimizers(self):
            self.trainer.estimated_stepping_batches  # noqa: B018 - sets the data up before restoring
            return super().configure_optimizers()

        def train_dataloader(self):
            return Remembers(torch.utils.data.TensorDataset(torch.ones(4, 1)))

    class LoadPending(L.Callback):
        def on_train_start(self, trainer, pl_module):
            internals.load_pending_loader_states(trainer)

    class SaveAtStep2(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def trainer(*callbacks):  # the data is set up early for an epoch budget only
        return L.Trainer(
            max_epochs=1, logger=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
        )  # fmt: skip

    trainer(SaveAtStep2()).fit(Resumed())
    trainer().fit(Resumed(), ckpt_path=tmp_path / "mid.ckpt")
    assert Remembers.loaded == []  # Lightning issue #20550: the state is dropped
    trainer(LoadPending()).fit(Resumed(), ckpt_path=tmp_path / "mid.ckpt")
    assert Remembers.loaded == [{"at": 3}]


def test_a_metrics_update_count_can_be_put_back():
    from torchmetrics import MeanMetric

    metric = MeanMetric()
    internals.set_update_count(metric, 3)
    assert metric.update_count == 3


def test_lightning_skips_the_callback_hooks_nnlab_sets_to_none_and_calls_the_others(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    calls = []

    class EndsOnly(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            calls.append("end")

    class SetOnInstance(L.Callback):
        def __init__(self):
            self.on_after_backward = lambda *args: calls.append("instance")

    class Saves(ModelCheckpoint):
        pass

    class Counts(ModelCheckpoint):  # overrides the hook nnlab skips for a plain ModelCheckpoint
        def on_train_batch_end(self, *args):
            calls.append("checkpoint")
            super().on_train_batch_end(*args)

    stepwise = Saves(every_n_train_steps=2, save_top_k=-1, dirpath=tmp_path / "stepwise")
    ends, counts = EndsOnly(), Counts(monitor=None)
    trainer = L.Trainer(
        max_steps=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[ends, SetOnInstance(), ModelCheckpoint(), stepwise,
        counts],
    )  # fmt: skip
    internals.skip_unused_batch_hooks(trainer)
    epoch_only = next(c for c in trainer.callbacks if type(c) is ModelCheckpoint)
    assert ends.on_before_backward is None and ends.on_train_batch_end is not None
    assert epoch_only.on_train_batch_end is None and stepwise.on_train_batch_end is not None
    trainer.fit(OneParameter())  # Lightning calling a None hook would raise TypeError here
    assert [calls.count(c) for c in ("end", "instance", "checkpoint")] == [4, 4, 4]
    saved = {p.name for p in (tmp_path / "stepwise").iterdir()}
    assert saved == {"epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"}
