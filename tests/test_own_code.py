"""A user's own Lightning code, kept outside nnlab's tree, runs through nnlab unchanged.

examples/moons holds a LightningModule and a LightningDataModule written as Lightning's
documentation writes them, and the same classifier as an nnlab Task; its conf/ folder joins
nnlab's configs through `hydra.searchpath`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import torch
from conftest import read_metrics, run_dirs, sigterm_after_first_checkpoint
from optuna.trial import TrialState
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from nnlab.api import train
from nnlab.errors import ConfigError
from nnlab.run.eval import evaluate

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "moons"
SEARCHPATH = f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]"


@pytest.fixture
def own_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's package on the Python path, here and in the commands the test starts."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE))


def hparams_of(run_dir: Path) -> tuple[dict, set[str]]:
    """TensorBoard's HPARAMS entry of a run: its hyperparameters and its metric columns."""
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    values, metrics = {}, set()
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField("session_start_info"):
            values = dict(data.session_start_info.hparams)
        if data.HasField("experiment"):
            metrics = {info.name.tag for info in data.experiment.metric_infos}
    return values, metrics


def test_a_plain_lightning_module_gets_a_run_dir_metrics_checkpoints_and_hparams(
    own_code, tmp_path
):
    run = train([SEARCHPATH, "experiment=moons_lightning", f"paths.log_dir={tmp_path}"])
    assert type(run.task).__name__ == "LitMoons"  # the user's class, built by Hydra
    metrics = read_metrics(run.run_dir)
    assert metrics.pop("status") == "completed"
    assert set(metrics) == {"train_loss", "val_loss", "val_acc", "test_loss", "test_acc"}
    assert metrics["val_acc"] >= 0.95 and metrics["test_acc"] >= 0.95  # the moons are bent
    assert (run.run_dir / ".hydra" / "config.yaml").is_file()
    assert {p.name for p in (run.run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    hparams, columns = hparams_of(run.run_dir)
    assert hparams["task.hidden"].number_value == 16 and hparams["data.noise"].number_value == 0.2
    assert {"val_acc", "test_acc", "train_loss"} <= columns


@pytest.mark.slow
def test_a_plain_module_resumes_after_sigterm_and_nnlab_eval_tests_it_again(
    own_code, cli, tmp_path
):
    logs = tmp_path / "logs"
    overrides = [SEARCHPATH, "experiment=moons_lightning", "trainer.max_epochs=120"]
    command = [sys.executable, "-m", "nnlab.train", f"paths.log_dir={logs}", *overrides]
    run_dir, _ = sigterm_after_first_checkpoint(command, logs, tmp_path)
    stopped = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 0 < stopped < 120 * 16

    resumed = cli(*overrides, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr
    assert run_dirs(logs) == [run_dir]
    finished = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert finished["global_step"] == 120 * 16  # 1,000 points in batches of 64: 16 per epoch
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"

    again = evaluate(run_dir, "last", [SEARCHPATH])
    assert again["test_acc"] == pytest.approx(metrics["test_acc"])


def test_a_plain_module_sweeps_and_is_searched_by_optuna(own_code, cli, tmp_path):
    base = [SEARCHPATH, "trainer.max_epochs=2"]
    sweep = cli(*base, "experiment=moons_lightning", "task.hidden=4,8", multirun=True)
    assert sweep.returncode == 0, sweep.stderr
    jobs = run_dirs(tmp_path / "logs" / "moons_lightning" / "multiruns")
    assert [read_metrics(job)["status"] for job in jobs] == ["completed", "completed"]

    search = cli(*base, "hparams_search=moons_optuna", "hydra.sweeper.n_trials=2", multirun=True)
    assert search.returncode == 0, search.stderr
    storage = tmp_path / "logs" / "moons_lightning" / "searches" / "moons_optuna.db"
    study = optuna.load_study(study_name="moons_optuna", storage=f"sqlite:///{storage}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert all(0.5 <= t.value <= 1 for t in study.trials)  # val_acc, as the module logs it


def test_a_task_built_on_nnlabs_base_gets_its_figures_and_loads_from_its_checkpoint(
    own_code, tmp_path
):
    run = train(
        [SEARCHPATH, "experiment=moons", f"paths.log_dir={tmp_path}", "trainer.max_epochs=5"]
    )
    assert (run.run_dir / "figures" / "decision_boundary.png").is_file()
    assert read_metrics(run.run_dir)["val/acc"] == pytest.approx(run.metrics["val/acc"])
    loaded = type(run.task).load_from_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")
    points = torch.randn(50, 2)
    with torch.no_grad():
        assert torch.equal(loaded.network(points), run.task.network.cpu()(points))


def test_composed_without_an_experiment_a_module_is_named_after_its_task_and_shows_what_it_uses(
    own_code, tmp_path
):
    alone = [SEARCHPATH, "~experiment", "data=moons", "task=lit_moons", f"paths.log_dir={tmp_path}"]
    run = train([*alone, "trainer.max_steps=-1", "trainer.max_epochs=2"])
    assert run.run_dir.parent.parent == tmp_path / "lit_moons"  # not under the rings' name
    hparams, _ = hparams_of(run.run_dir)
    assert not [k for k in hparams if k.startswith(("model.", "optimizer."))]  # it builds its own
    assert run.cfg.model is None and run.cfg.optimizer is None

    with pytest.raises(ConfigError) as refused:  # a sweep over it would change nothing
        train([*alone, "optimizer.lr=0.5"])
    assert (refused.value.key, refused.value.value) == ("optimizer.lr", 0.5)
    assert "LitMoons does not take the optimizer config" in str(refused.value)
