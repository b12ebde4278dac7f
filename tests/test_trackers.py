"""The loggers beside TensorBoard (MLflow, W&B, CSV), tags, and the switches of the configs:
early stopping, debug=limit, debug=profiler, trainer=mps. All offline."""

from __future__ import annotations

import csv
import sys

import pytest
from conftest import read_metrics, trained

from nnlab.analysis.report import main as report_main
from nnlab.api import train

RINGS = ["experiment=rings", "trainer.max_steps=300"]


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No credentials, nothing cached in the user's home: W&B must run offline."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))


def test_mlflow_keeps_params_metrics_tags_and_figures_in_a_local_store(tmp_path):
    from mlflow.tracking import MlflowClient

    run = train([*RINGS, "logger=mlflow", "tags=[baseline,small]", f"paths.log_dir={tmp_path}"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("rings")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == run.run_dir.name and found.info.status == "FINISHED"
    assert found.data.params["model.hidden_nodes"] == "3"
    assert found.data.params["optimizer.class"] == "Adam"
    assert found.data.tags["tags"] == "baseline,small"
    assert found.data.metrics["val/acc"] == pytest.approx(run.metrics["val/acc"])
    history = client.get_metric_history(found.info.run_id, "train/loss")
    assert len(history) >= 3 and history[-1].step == 300  # logged as it trained
    figures = {a.path for a in client.list_artifacts(found.info.run_id, "figures")}
    assert figures == {f"figures/{name}.png" for name in FIGURES}
    assert (tmp_path / "mlflow" / "artifacts").is_dir()  # under paths.log_dir, not the cwd


FIGURES = ("decision_boundary", "hidden_lines", "hidden_activations")


def test_wandb_runs_offline_without_credentials_and_keeps_metrics_and_figures(offline, tmp_path):
    run = train([*RINGS, "logger=wandb", "tags=[baseline]", f"paths.log_dir={tmp_path}"])
    (offline_run,) = (run.run_dir / "wandb").glob("offline-run-*")
    (records,) = offline_run.glob("run-*.wandb")
    data = records.read_bytes()
    for written in (b"val/acc", b"model.hidden_nodes", b"baseline", run.run_dir.name.encode()):
        assert written in data
    images = {p.name.split("_")[0] for p in (offline_run / "files").rglob("*.png")}
    assert images == {"decision", "hidden"}
    assert len(list((offline_run / "files").rglob("*.png"))) == len(FIGURES)
    assert "wandb" not in sys.modules or sys.modules["wandb"].run is None  # the run was ended


def test_tags_reach_metrics_json_tensorboard_csv_and_the_report(tmp_path):
    for width in (2, 3):
        train([*RINGS, f"model.hidden_nodes={width}", "logger=[tensorboard,csv]",
               "tags=[baseline,rings]", f"paths.log_dir={tmp_path}"])  # fmt: skip
    runs = sorted((tmp_path / "rings" / "runs").iterdir())
    assert [read_metrics(r)["tags"] for r in runs] == [["baseline", "rings"]] * 2
    assert "tags: baseline,rings" in (runs[0] / "hparams.yaml").read_text()  # the CSV logger's
    report_main([str(tmp_path / "rings" / "runs")])
    rows = list(csv.DictReader((tmp_path / "rings" / "runs" / "report.csv").open()))
    assert [row["tags"] for row in rows] == ["baseline,rings"] * 2
    assert "model.hidden_nodes" in rows[0]


def test_early_stopping_ends_the_run_and_says_so(tmp_path):
    # val/loss cannot fall by 0.5 in 5 validations: the run stops early, after 6 of them.
    run = train(
        [*RINGS, "trainer.max_steps=5000", "callbacks=early_stopping",
         "callbacks.early_stopping.min_delta=0.5", f"paths.log_dir={tmp_path}"]
    )  # fmt: skip
    status = read_metrics(run.run_dir)["status"]
    assert run.trainer.global_step == 3000  # validations every 500 steps
    assert status == (
        "completed (stopped early at step 3000: val/loss did not improve for 5 checks)"
    )


def test_debug_limit_takes_a_few_batches_and_the_profiler_writes_its_report(tmp_path, config):
    run = train([*RINGS, "debug=limit", f"paths.log_dir={tmp_path / 'limit'}"])
    assert run.trainer.global_step == 100  # rings: one batch of 100 steps per epoch, one epoch
    assert read_metrics(run.run_dir)["status"] == "completed"

    run = train([*RINGS, "debug=profiler", f"paths.log_dir={tmp_path / 'profile'}"])
    report = (run.run_dir / "fit-profile.txt").read_text()
    assert "run_training_epoch" in report and "Total" in report


@pytest.mark.skipif(
    __import__("torch").backends.mps.is_available(), reason="this machine has Apple's MPS"
)
def test_trainer_mps_without_mps_says_what_to_use(cli):
    result = cli("experiment=rings", "trainer=mps")
    assert result.returncode == 2
    assert "bad config trainer.accelerator='mps': torch sees no Apple MPS device" in result.stderr


def test_a_run_that_max_time_stops_says_so(config, tmp_path):
    metrics = trained(config("experiment=rings", "trainer.max_time=00:00:00:01", "logger=none"))
    status = metrics["status"]
    assert status.startswith("completed (stopped early at step ")
    assert status.endswith(": trainer.max_time ran out)")
    assert 0 < int(status.split("step ")[1].split(":")[0]) < 10_000
