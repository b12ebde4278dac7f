"""Checkpoints are read weights-only: a file that would run code is refused, unread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, run_command

from nnlab.api import load_run, train
from nnlab.errors import ConfigError
from nnlab.run.eval import main as eval_main


class Payload:
    """Unpickled, it creates `marker`: what a hostile checkpoint could do with any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def hostile_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "global_step": 1, "payload": Payload(marker)}, path)
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    logs = tmp_path_factory.mktemp("logs")
    return train(["experiment=rings", "trainer.max_steps=200", f"paths.log_dir={logs}"])


def test_the_hostile_file_really_runs_code_when_unpickled(tmp_path):
    marker = tmp_path / "marker"
    torch.load(hostile_checkpoint(tmp_path / "evil.ckpt", marker), weights_only=False)
    assert marker.exists()  # so its absence below means the payload never ran


def test_nnlab_eval_refuses_a_hostile_checkpoint_with_exit_2(finished_run, tmp_path):
    marker = tmp_path / "marker"
    evil = hostile_checkpoint(tmp_path / "evil.ckpt", marker)
    result = run_command(eval_main, [f"run_dir={finished_run.run_dir}", f"ckpt={evil}"], tmp_path)
    assert result.returncode == 2
    refused = "refused: it holds Python objects beyond weights (it names builtins.getattr, "
    assert f"nnlab-eval: bad config ckpt='{evil}': {refused}" in result.stderr
    assert "Traceback" not in result.stderr and not marker.exists()


def test_resuming_loading_and_init_from_refuse_it_and_leave_the_run_as_it_was(
    finished_run, tmp_path
):
    marker = tmp_path / "marker"
    evil = hostile_checkpoint(finished_run.run_dir / "checkpoints" / "evil.ckpt", marker)
    logs = f"paths.log_dir={finished_run.run_dir.parents[2]}"
    with pytest.raises(ConfigError, match="refused: it holds Python objects"):
        train(["experiment=rings", logs, f"init_from={evil}"])
    with pytest.raises(ConfigError, match="completed; a finished run is never overwritten"):
        train(["experiment=rings", logs, f"ckpt_path={evil}"])  # refused before it is read
    with pytest.raises(ConfigError, match="refused: it holds Python objects"):
        load_run(finished_run.run_dir, ckpt=str(evil))
    assert not marker.exists()
    assert read_metrics(finished_run.run_dir)["status"] == "completed"


def test_an_interrupted_runs_hostile_last_checkpoint_is_refused_and_the_run_stays_resumable(
    tmp_path,
):
    run = train(["experiment=rings", "trainer.max_steps=200", f"paths.log_dir={tmp_path}"])
    (run.run_dir / "metrics.json").write_text('{"status": "interrupted"}')
    marker = tmp_path / "marker"
    hostile_checkpoint(run.run_dir / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(
        ConfigError,
        match=r"ckpt_path='[^']+last\.ckpt': refused: it holds Python objects beyond weights",
    ):
        train(["experiment=rings", "ckpt_path=last", f"paths.log_dir={tmp_path}"])
    assert not marker.exists() and read_metrics(run.run_dir)["status"] == "interrupted"


def test_a_truncated_checkpoint_is_named_as_truncated(finished_run, tmp_path):
    whole = (finished_run.run_dir / "checkpoints" / "last.ckpt").read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ConfigError, match="not a readable checkpoint: truncated or corrupt"):
        load_run(finished_run.run_dir, ckpt=str(cut))


def test_a_mapped_read_gives_the_checkpoint_and_takes_the_legacy_format_too(tmp_path):
    from nnlab.run import resume

    weights = {"layer.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save({"state_dict": weights, "global_step": 7}, tmp_path / "zip.ckpt")
    torch.save(  # torch's format before 1.6, which it cannot map
        {"state_dict": weights, "global_step": 7},
        tmp_path / "legacy.ckpt",
        _use_new_zipfile_serialization=False,
    )
    for name in ("zip.ckpt", "legacy.ckpt"):
        checkpoint = resume.read(tmp_path / name, "ckpt_path", mapped=True)
        assert checkpoint["global_step"] == 7
        assert torch.equal(checkpoint["state_dict"]["layer.weight"], weights["layer.weight"])
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "zip.ckpt").read_bytes()[:200])
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        resume.read(tmp_path / "cut.ckpt", "ckpt_path", mapped=True)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            {"state_dict": {"network.hidden.0.weight": "abc"}, "global_step": 1},
            "the checkpoint's network.hidden.0.weight is str, not a tensor",
        ),
        ({"state_dict": {}, "global_step": "abc"}, "its global_step is 'abc'"),
        (b"\x80\x04garbage that is no checkpoint", "not a readable checkpoint: truncated or"),
    ],
)
def test_a_checkpoint_of_the_wrong_kinds_is_refused_by_every_reader(
    finished_run, tmp_path, content, says
):
    crafted = tmp_path / "crafted.ckpt"
    if isinstance(content, bytes):
        crafted.write_bytes(content)
    else:
        real = torch.load(finished_run.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        torch.save(real | content, crafted)
    result = run_command(
        eval_main, [f"run_dir={finished_run.run_dir}", f"ckpt={crafted}"], tmp_path
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"nnlab-eval: bad config ckpt='{crafted}': ") and says in line
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    with pytest.raises(ConfigError, match=says.replace("(", r"\(")):
        train(["experiment=rings", logs, f"init_from={crafted}"])


def test_a_run_with_validation_off_keeps_its_last_checkpoint_and_evaluates(tmp_path):
    """It said "last.ckpt holds the final weights" and wrote none: nnlab-eval then failed."""
    from nnlab.train import main

    overrides = ["experiment=rings", "trainer.max_steps=200", "trainer.limit_val_batches=0"]
    result = run_command(main, [*overrides, "logger=none", f"paths.log_dir={tmp_path}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "No best.ckpt: validation is off (last.ckpt holds the final weights)" in result.stderr
    (run_dir,) = [p.parent for p in tmp_path.glob("rings/runs/*/.hydra")]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 200
    evaluated = run_command(eval_main, [f"run_dir={run_dir}"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert read_metrics(run_dir)["test/acc"] == pytest.approx(
        json.loads(next((run_dir / "evals").glob("*/metrics.json")).read_text())["test/acc"]
    )


def test_a_resume_from_weights_that_are_not_finite_is_refused(finished_run, tmp_path):
    """Resumed at its last step, it trained no more, and ended "completed" with NaN metrics."""
    import shutil

    copy = tmp_path / "logs" / "rings" / "runs" / finished_run.run_dir.name
    shutil.copytree(finished_run.run_dir, copy)
    (copy / "metrics.json").write_text('{"status": "interrupted"}')
    last = copy / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    saved["state_dict"]["network.output.bias"] = torch.full_like(
        saved["state_dict"]["network.output.bias"], float("nan")
    )
    torch.save(saved, last)
    with pytest.raises(ConfigError, match=r"its network\.output\.bias holds NaN or inf"):
        train(["experiment=rings", f"ckpt_path={copy}"])
    assert read_metrics(copy)["status"] == "interrupted"  # left as it was
