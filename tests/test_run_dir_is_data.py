"""A run dir is data: code planted in its saved config or its overrides (a `_target_` node) is
refused by every reader (nnlab-eval, load_run, a resume) and runs nothing. The payload opens a
file for writing: the control shows that it does when the saved config is built directly.
And a run dir is one process's at a time (run.lock)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import hydra.utils
import pytest
import yaml
from omegaconf import OmegaConf

from nnlab.api import load_run, train
from nnlab.errors import ConfigError
from nnlab.run.eval import evaluate


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    logs = tmp_path_factory.mktemp("logs")
    return train(["trainer.max_steps=100", "logger=none", f"paths.log_dir={logs}"]).run_dir


def unfinished_copy(run_dir: Path, tmp_path: Path) -> Path:
    """The run, copied into a log dir of its own and marked interrupted (so it may resume)."""
    copy = tmp_path / "logs" / "rings" / "runs" / run_dir.name
    shutil.copytree(run_dir, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    (copy / "metrics.json").write_text(json.dumps(metrics | {"status": "interrupted"}))
    return copy


def readers(run_dir: Path, tmp_path: Path) -> dict[str, object]:
    return {
        "nnlab-eval": lambda: evaluate(run_dir, "last"),
        "load_run": lambda: load_run(run_dir, "last"),
        "ckpt_path=": lambda: train([f"ckpt_path={run_dir}", f"paths.log_dir={tmp_path / 'logs'}"]),
    }


def test_a_target_planted_in_the_saved_config_is_refused_by_every_reader(finished, tmp_path):
    run_dir, marker = unfinished_copy(finished, tmp_path), tmp_path / "written"
    saved = run_dir / ".hydra" / "config.yaml"
    config = yaml.safe_load(saved.read_text())
    config["data"] = {"_target_": "builtins.open", "file": str(marker), "mode": "w"}
    saved.write_text(yaml.safe_dump(config))

    hydra.utils.instantiate(OmegaConf.load(saved).data).close()  # the control: it runs
    assert marker.exists()
    marker.unlink()

    for name, read in readers(run_dir, tmp_path).items():
        with pytest.raises(ConfigError) as refused:
            read()
        assert str(refused.value).endswith(
            "its config names builtins.open at data._target_, where the run's overrides compose "
            "nnlab.data.rings.RingsDataModule: changed since the run; nnlab runs no code a run "
            "dir names"
        ), name
        assert not marker.exists(), name


def test_a_target_planted_in_the_saved_overrides_is_refused_by_every_reader(finished, tmp_path):
    run_dir, marker = unfinished_copy(finished, tmp_path), tmp_path / "written"
    planted = f"data={{_target_:builtins.open,file:'{marker}',mode:w}}"
    overrides = run_dir / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump([*yaml.safe_load(overrides.read_text()), planted]))

    for name, read in readers(run_dir, tmp_path).items():
        with pytest.raises(ConfigError, match=r"builtins\.open") as refused:
            read()
        assert "code" in str(refused.value) and "run dir" in str(refused.value), name
        assert not marker.exists(), name


def test_a_run_dir_in_use_by_a_live_process_is_refused_and_a_dead_holders_lock_taken_over(
    finished, tmp_path
):
    run_dir = unfinished_copy(finished, tmp_path)
    lock, before = run_dir / "run.lock", (run_dir / "metrics.json").read_text()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{holder.pid} {socket.gethostname()}\n")
        for name, read in readers(run_dir, tmp_path).items():
            if name == "load_run":
                continue  # it reads the files once, writing nothing
            with pytest.raises(ConfigError) as refused:
                read()
            assert f"in use by process {holder.pid} on {socket.gethostname()}: wait for it" in str(
                refused.value
            ), name
        assert (run_dir / "metrics.json").read_text() == before  # untouched
    finally:
        holder.kill()
        holder.wait()

    # Its holder is dead (a kill -9 leaves the lock behind): the resume takes it over.
    resumed = train([f"ckpt_path={run_dir}", f"paths.log_dir={tmp_path / 'logs'}"])
    assert resumed.metrics["status"] == "completed" and not lock.exists()


@pytest.mark.parametrize("linked", ["figures", "evals", "train.log"])
def test_a_run_dir_linking_out_is_refused_and_nothing_is_written_where_it_points(
    finished, tmp_path, linked
):
    run_dir, outside = unfinished_copy(finished, tmp_path), tmp_path / "outside"
    outside.mkdir()
    target = outside / linked
    shutil.rmtree(run_dir / linked, ignore_errors=True)
    (run_dir / linked).unlink(missing_ok=True)
    if linked == "train.log":
        target.write_text("")
    else:
        target.mkdir()
    (run_dir / linked).symlink_to(target)
    for name, read in readers(run_dir, tmp_path).items():
        if name == "load_run":
            continue  # it writes nothing
        with pytest.raises(ConfigError, match="is a symbolic link: nnlab writes nothing outside"):
            read()
    assert [p.stat().st_size for p in outside.rglob("*") if p.is_file()] in ([], [0])
    assert not [p for p in outside.rglob("*") if p.is_dir() and p != target]
