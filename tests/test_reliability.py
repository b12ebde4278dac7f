"""Runs that go wrong: divergence, interruption and resumption, and what they leave behind."""

from __future__ import annotations

import errno
import math
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    assert_same_completed_metrics,
    only_run,
    read_metrics,
    run_dirs,
    sigterm_after_first_checkpoint,
    sigterm_at_validation,
    trained,
)

from nnlab.errors import DiskFull, Diverged, Interrupted
from nnlab.tasks.image_classifier import ImageClassifierTask
from nnlab.tasks.rings import RingsTask


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(
    config, tmp_path, monkeypatch
):
    honest_step = RingsTask.model_step

    def step_whose_loss_turns_nan(self, batch):
        loss, arguments = honest_step(self, batch)
        return (loss * float("nan") if self.global_step >= 650 else loss), arguments

    monkeypatch.setattr(RingsTask, "model_step", step_whose_loss_turns_nan)
    with pytest.raises(Diverged) as stop:
        trained(config("experiment=rings", "trainer.max_steps=3000"))
    assert stop.value.step == 651  # the first step whose loss was NaN, counted from 1
    assert "diverged: the training loss is nan at step 651" in str(stop.value)
    assert str(stop.value.checkpoint).endswith("last.ckpt")

    run_dir = tmp_path / "run"
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "diverged"
    assert math.isfinite(metrics["val/loss"])  # the last values logged before the NaN
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 500  # the validation before the NaN
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def test_a_nan_loss_read_every_few_batches_is_named_at_its_step_and_never_checkpointed(
    config, tmp_path, tiny_mnist, monkeypatch
):
    # One step per batch; the guard reads the losses every 5 batches and before validating.
    honest_step = ImageClassifierTask.model_step

    def step_whose_loss_turns_nan(self, batch):
        loss, arguments = honest_step(self, batch)
        return (loss * float("nan") if self.global_step >= 14 else loss), arguments

    monkeypatch.setattr(ImageClassifierTask, "model_step", step_whose_loss_turns_nan)
    data = [f"paths.data_dir={tiny_mnist}", "data.download=false", "data.batch_size=32"]
    overrides = [
        "experiment=mnist_mlp",
        *data,
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=5",
    ]
    with pytest.raises(Diverged) as stop:
        trained(config(*overrides))
    assert stop.value.step == 15  # 12 batches per epoch: the 3rd of the second epoch
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 12  # the first epoch's validation, before the NaN
    assert all(torch.isfinite(value).all() for value in checkpoint["state_dict"].values())


def test_diverging_run_exits_with_status_3(cli, tmp_path):
    result = cli("experiment=wave", "optimizer=sgd", "optimizer.lr=10", "trainer.max_steps=500")
    assert result.returncode == 3
    assert "diverged: the training loss is inf at step" in result.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    assert read_metrics(run_dir)["status"] == "diverged"


@pytest.mark.slow
def test_sigterm_saves_the_run_and_resuming_ends_where_an_uninterrupted_run_ends(cli, tmp_path):
    overrides = ["experiment=rings", "trainer.max_steps=4000", "model.hidden_nodes=4"]
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "nnlab.train", f"paths.log_dir={logs}", *overrides]
    # The first validation (step 500) writes last.ckpt: the signal comes once training is under way.
    run_dir, stderr = sigterm_after_first_checkpoint(command, logs, tmp_path)
    stopped_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)[
        "global_step"
    ]
    assert 500 <= stopped_at < 4000
    assert f"at step {stopped_at}; saved {run_dir / 'checkpoints' / 'last.ckpt'}" in stderr

    resumed = cli("experiment=rings", "ckpt_path=last")  # its other overrides come from the run
    assert resumed.returncode == 0, resumed.stderr
    assert run_dirs(logs) == [run_dir]  # resumed in place: one run, one TensorBoard run
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count("model.hidden_nodes=4") == 1
    assert len(list((run_dir / ".hydra" / "resumed").iterdir())) == 1

    straight_dir = only_run(cli, tmp_path / "straight", *overrides)
    assert_same_completed_metrics(run_dir, straight_dir, rel=1e-5, abs=1e-7)

    again = cli("experiment=rings", "ckpt_path=last")
    assert again.returncode == 2
    assert "completed; a finished run is never overwritten" in again.stderr
    assert read_metrics(run_dir)["status"] == "completed"


def test_corrupt_checkpoint_is_refused_before_the_run_starts(cli, tmp_path):
    run_dir = tmp_path / "logs" / "rings" / "runs" / "2026-01-01_00-00-00_abcdef"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- experiment=rings\n")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 half a zip file")
    (run_dir / "metrics.json").write_text('{"status": "interrupted"}')

    result = cli("experiment=rings", "ckpt_path=last")
    assert result.returncode == 2
    assert "bad config ckpt_path=" in result.stderr and "not a readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert read_metrics(run_dir)["status"] == "interrupted"  # untouched


def test_missing_checkpoint_is_refused(cli, tmp_path):
    result = cli("experiment=rings", f"ckpt_path={tmp_path / 'nowhere' / 'last.ckpt'}")
    assert result.returncode == 2
    assert "is not an nnlab run dir" in result.stderr
    assert not (tmp_path / "logs" / "rings").exists()  # nothing was started


def test_an_exception_mid_run_is_recorded_with_its_message(config, tmp_path, monkeypatch):
    def broken_step(self, batch):
        raise RuntimeError("the loss broke\nsecond line")

    monkeypatch.setattr(RingsTask, "model_step", broken_step)
    with pytest.raises(RuntimeError):
        trained(config("experiment=rings", "trainer.max_steps=300"))
    assert read_metrics(tmp_path / "run")["status"] == "failed: RuntimeError: the loss broke"


def test_a_signal_during_validation_stops_the_run_as_interrupted(config, tmp_path, monkeypatch):
    # Lightning validates after the hook that stops a run mid-training; the signal lands there.
    monkeypatch.setattr(RingsTask, "on_validation_start", sigterm_at_validation(500))
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as stop:
        trained(config("experiment=rings", "trainer.max_steps=1500"))
    assert stop.value.signum == signal.SIGTERM and stop.value.step == 500
    run_dir = tmp_path / "run"
    assert read_metrics(run_dir)["status"] == "interrupted"  # not "completed": it can resume
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 500
    assert signal.getsignal(signal.SIGTERM) == handler  # the handler is given back


@pytest.mark.parametrize(
    ("signal_at", "stopped_at", "given", "validate_every"),
    [
        (28, 29, 5, 1),  # mid-epoch: the run stops after the batch under way
        (23, 24, 0, 1),  # at an epoch's last batch: after the epoch's validation, none to skip
        (28, 29, 5, 2),  # validating every 2 epochs: last.ckpt still ends at the last step
    ],
)
def test_an_image_run_stopped_by_a_signal_resumes_to_the_same_batches_and_metrics(
    cli, tmp_path, tiny_mnist, monkeypatch, signal_at, stopped_at, given, validate_every
):
    # 360 training images in batches of 32: 12 steps an epoch, 3 epochs.
    overrides = [
        f"trainer.check_val_every_n_epoch={validate_every}",
        "experiment=fashion_mlp",
        f"paths.data_dir={tiny_mnist}",
        "data.download=false",
        "data.batch_size=32",
        "trainer.max_epochs=3",
        "task.robustness=null",
        "logger=none",
    ]
    straight_dir = only_run(cli, tmp_path / "straight", *overrides)

    # The signal lands after nnlab's callbacks have seen the batch end: the run stops at the
    # next one, without the extra validation that Lightning's own stop would add.
    def train_batch_end_with_sigterm(self, outputs, batch, batch_idx):
        if self.global_step == signal_at:
            os.kill(os.getpid(), signal.SIGTERM)

    with monkeypatch.context() as patch:
        patch.setattr(ImageClassifierTask, "on_train_batch_end", train_batch_end_with_sigterm)
        stopped = cli(*overrides)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)

    assert last["global_step"] == stopped_at  # after a batch, not at a validation of its own
    loader_state = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader_state == [{"batches_given": given}]

    resumed = cli("experiment=fashion_mlp", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr
    resumed_steps = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed_steps["global_step"] == 36
    assert_same_completed_metrics(run_dir, straight_dir, rel=1e-6, abs=1e-7)


def test_a_resume_that_cannot_start_leaves_the_run_interrupted_and_resumable(
    cli, tmp_path, monkeypatch
):
    overrides = ["experiment=rings", "trainer.max_steps=600", "model.hidden_nodes=4"]
    with monkeypatch.context() as patch:
        patch.setattr(RingsTask, "on_validation_start", sigterm_at_validation(500))
        assert cli(*overrides).returncode == 128 + signal.SIGTERM
    (run_dir,) = run_dirs(tmp_path / "logs")
    files = ("metrics.json", "checkpoints/last.ckpt")
    before = {name: (run_dir / name).read_bytes() for name in files}
    events_before = sorted(run_dir.glob("events.out.tfevents.*"))

    shapes = cli("experiment=rings", "ckpt_path=last", "model.hidden_nodes=5")
    assert shapes.returncode == 2
    assert shapes.stderr.count("nnlab: ") == 1 and "Traceback" not in shapes.stderr
    assert "bad config model.hidden_nodes=5: the run had model.hidden_nodes=4; layer " in (
        shapes.stderr
    )
    optimizer = cli("experiment=rings", "ckpt_path=last", "optimizer=sgd")  # Lightning refuses
    assert optimizer.returncode == 2 and "Traceback" not in optimizer.stderr
    assert "bad config optimizer='sgd': the run did not set it; resuming failed" in (
        optimizer.stderr
    )
    assert {name: (run_dir / name).read_bytes() for name in files} == before
    assert sorted(run_dir.glob("events.out.tfevents.*")) == events_before

    resumed = cli("experiment=rings", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr
    assert read_metrics(run_dir)["status"] == "completed"


def test_a_full_disk_ends_the_run_with_one_line_and_leaves_earlier_files_whole(
    cli, tmp_path, monkeypatch
):
    import matplotlib.image

    written = []

    def imsave_until_the_disk_fills(path, *args, **kwargs):
        if written:  # the second figure finds the disk full, halfway through
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(path)
        return real_imsave(path, *args, **kwargs)

    real_imsave = matplotlib.image.imsave
    monkeypatch.setattr(matplotlib.image, "imsave", imsave_until_the_disk_fills)
    result = cli("experiment=rings", "trainer.max_steps=300", "logger=none", analyse=True)
    assert result.returncode == 4
    (run_dir,) = run_dirs(tmp_path / "logs")
    figures = sorted((run_dir / "figures").iterdir())
    assert [p.suffix for p in figures] == [".png"]  # the first figure, whole; no partial file
    assert figures[0].read_bytes().startswith(b"\x89PNG\r\n")
    status = read_metrics(run_dir)["status"]
    assert status.startswith("failed: disk full while writing ") and status.endswith(".png")
    assert result.stderr.count("nnlab: disk full: no space left to write ") == 1
    assert "Traceback" not in result.stderr


def test_an_atomic_write_that_fails_leaves_the_earlier_file_whole(tmp_path):
    from nnlab.run.record import write_atomically, write_metrics

    write_metrics(tmp_path, {"val/acc": 0.5}, "interrupted")
    before = (tmp_path / "metrics.json").read_bytes()

    def half_then_full(partial):
        partial.write_text('{"val/acc": 0.')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"metrics\.json") as failed:
        write_atomically(tmp_path / "metrics.json", half_then_full)
    assert failed.value.errno == errno.ENOSPC
    assert (tmp_path / "metrics.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_run_stopped_after_its_last_step_resumes_to_the_same_complete_metrics(
    cli, tmp_path, monkeypatch
):
    # Found by killing runs at random moments (scripts/kill_campaign.py): the last checkpoint
    # comes at the last step's validation, before the epoch's train values are logged.
    overrides = ["experiment=rings", "trainer.max_steps=500", "logger=none"]

    with monkeypatch.context() as patch:
        patch.setattr(RingsTask, "on_validation_start", sigterm_at_validation(500))
        assert cli(*overrides).returncode == 128 + signal.SIGTERM
    (run_dir,) = run_dirs(tmp_path / "logs")
    resumed = cli("experiment=rings", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr
    assert {"train/loss", "train/acc"} <= set(read_metrics(run_dir))
    straight_dir = only_run(cli, tmp_path / "straight", *overrides)
    assert_same_completed_metrics(run_dir, straight_dir, rel=1e-6, abs=1e-7)


def test_a_checkpoint_the_disk_cannot_hold_leaves_the_last_one_whole(config, tmp_path, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    saves: list[str] = []
    real_save = TorchCheckpointIO.save_checkpoint

    def full_at_the_second_last_ckpt(self, checkpoint, path, storage_options=None):
        saves.append(Path(path).name)
        if saves.count("last.ckpt.partial") == 2:  # half written, then the disk is full
            Path(path).write_bytes(b"PK\x03\x04 half")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full_at_the_second_last_ckpt)
    cfg = config("experiment=rings", "trainer.max_steps=1000", "logger=none")  # saves at 500, 1000
    with pytest.raises(DiskFull) as stopped:
        trained(cfg)
    run_dir = Path(cfg.paths.output_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    assert str(stopped.value).startswith(f"disk full: no space left to write {last};")
    assert torch.load(last, weights_only=True)["global_step"] == 500  # the earlier one, whole
    assert not list(run_dir.rglob("*.partial"))


def test_a_signal_while_testing_records_interrupted_and_the_resume_finishes_the_test(
    cli, tmp_path, monkeypatch
):
    real_test_step = RingsTask.test_step

    def test_step_with_sigterm(self, *args):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_test_step(self, *args)

    overrides = ["experiment=rings", "trainer.max_steps=500", "logger=none"]
    with monkeypatch.context() as patch:
        patch.setattr(RingsTask, "test_step", test_step_with_sigterm)
        stopped = cli(*overrides)
    assert stopped.returncode == 128 + signal.SIGTERM
    assert "nnlab: interrupted by SIGTERM at step 500; saved " in stopped.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and "test/acc" not in metrics
    assert {"train/loss", "val/acc"} <= set(metrics)

    assert cli("experiment=rings", "ckpt_path=last").returncode == 0
    resumed = read_metrics(run_dir)
    assert resumed["status"] == "completed" and "test/acc" in resumed
    assert resumed["train/loss"] == metrics["train/loss"]  # the train metrics kept


def test_a_signal_during_start_up_records_interrupted_and_leaves_no_lock(
    cli, tmp_path, monkeypatch
):
    """Before training (here while the run is built), a signal ended the process where it
    stood: a run dir without metrics.json, and a stale run.lock. A resumed run started again
    keeps its last.ckpt and is told to resume again."""
    import nnlab.train

    real_build = nnlab.train.build_run

    def build_with_sigterm(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_build(*args, **kwargs)

    overrides = ["experiment=rings", "trainer.max_steps=300", "logger=none"]
    with monkeypatch.context() as patch:
        patch.setattr(nnlab.train, "build_run", build_with_sigterm)
        stopped = cli(*overrides)
    assert stopped.returncode == 128 + signal.SIGTERM
    assert stopped.stderr.splitlines() == [
        "nnlab: interrupted by SIGTERM before training started; run the command again"
    ]
    (fresh,) = run_dirs(tmp_path / "logs")
    assert read_metrics(fresh) == {"status": "interrupted"}
    assert not (fresh / "run.lock").exists()

    with monkeypatch.context() as patch:
        patch.setattr(RingsTask, "on_validation_start", sigterm_at_validation(500))
        assert cli(*overrides, "trainer.max_steps=800").returncode == 128 + signal.SIGTERM
    stopped_run = max(run_dirs(tmp_path / "logs"))
    with monkeypatch.context() as patch:
        patch.setattr(nnlab.train, "build_run", build_with_sigterm)
        again = cli("experiment=rings", f"ckpt_path={stopped_run}")
    assert again.returncode == 128 + signal.SIGTERM
    assert again.stderr.splitlines() == [
        "nnlab: interrupted by SIGTERM. Resume with the same command plus ckpt_path=last"
    ]
    assert not (stopped_run / "run.lock").exists()
    assert cli("experiment=rings", f"ckpt_path={stopped_run}").returncode == 0
    assert read_metrics(stopped_run)["status"] == "completed"


def test_a_run_whose_dir_is_removed_while_it_runs_ends_in_one_line(cli, tmp_path, monkeypatch):
    """Each of its writers failed its own way: three chained tracebacks."""
    import shutil

    def validation_start_removing_the_run_dir(self):
        if self.global_step == 500:
            shutil.rmtree(self.trainer.default_root_dir)

    monkeypatch.setattr(RingsTask, "on_validation_start", validation_start_removing_the_run_dir)
    result = cli("experiment=rings", "trainer.max_steps=1000")
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("nnlab")]
    assert line.startswith("nnlab: the run dir ") and line.endswith(
        "was removed while the run ran; nothing of it is kept"
    )
    assert "Traceback" not in result.stderr
    assert not run_dirs(tmp_path / "logs")


def test_a_requeued_slurm_job_takes_over_its_earlier_runs_lock_from_any_node(tmp_path, monkeypatch):
    from nnlab.errors import ConfigError
    from nnlab.run import layout

    for name, value in {"SLURM_JOB_ID": "8", "SLURM_ARRAY_JOB_ID": "7"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    lock = tmp_path / layout.LOCK
    lock.write_text("4242 another-node 7_0\n")  # the first run, killed outright on its node
    refused = pytest.raises(ConfigError, match="in use by process 4242 on another-node")
    with refused, layout.locked(tmp_path, "paths.output_dir"):  # not requeued: a second comer
        pass
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    lock.write_text("4242 another-node 7_1\n")  # another job of the array: never taken
    with pytest.raises(ConfigError, match="in use by"), layout.locked(tmp_path, "x"):
        pass
    lock.write_text("4242 another-node 7_0\n")
    with layout.locked(tmp_path, "paths.output_dir"):
        assert lock.read_text().split()[2] == "7_0"  # now this run's
    assert not lock.exists()
