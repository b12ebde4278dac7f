"""nnlab.api: the command's runs from Python, as a notebook uses them."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import read_metrics

from nnlab.api import load_run, train
from nnlab.errors import ConfigError
from nnlab.run.eval import evaluate
from nnlab.tasks.rings import RingsTask


@pytest.fixture(scope="module")
def rings_runs(tmp_path_factory: pytest.TempPathFactory) -> list:
    """Two rings runs trained through the API, sharing a log dir (3 and 4 hidden nodes)."""
    logs = tmp_path_factory.mktemp("logs")
    return [
        train(
            [
                "experiment=rings",
                "trainer.max_steps=800",
                f"model.hidden_nodes={n}",
                f"paths.log_dir={logs}",
            ]
        )
        for n in (3, 4)
    ]


def test_train_writes_a_normal_run_dir_each_time_and_returns_the_trained_run(rings_runs):
    first, second = rings_runs
    assert first.run_dir != second.run_dir and first.run_dir.parent == second.run_dir.parent
    for run, width in zip(rings_runs, (3, 4), strict=True):
        assert (run.run_dir / ".hydra" / "config.yaml").is_file()
        assert (run.run_dir / "train.log").read_text().count("Instantiating") >= 4
        assert run.cfg.model.hidden_nodes == width and run.task.network.widths == [width]
        assert run.metrics["status"] == "completed"  # as metrics.json says
        assert run.metrics == pytest.approx(read_metrics(run.run_dir))
        assert run.trainer.global_step == 800 and run.datamodule.splits["test"][0].shape == (
            1000,
            2,
        )


def test_train_gives_back_torch_threads_and_logging(tmp_path):
    torch.set_num_threads(2)
    handlers = list(logging.getLogger().handlers)
    train(["experiment=rings", "trainer.max_steps=100", f"paths.log_dir={tmp_path}"])  # threads: 1
    assert torch.get_num_threads() == 2
    assert logging.getLogger().handlers == handlers  # no handler left writing to train.log


def test_an_api_run_is_tested_again_by_nnlab_eval(rings_runs):
    run = rings_runs[0]
    assert evaluate(run.run_dir, "last")["test/acc"] == pytest.approx(run.metrics["test/acc"])


def test_load_run_rebuilds_a_finished_run_with_its_weights_in_eval_mode(rings_runs):
    run = rings_runs[0]
    loaded = load_run(run.run_dir, ckpt="last")
    assert not loaded.task.training and loaded.metrics == pytest.approx(run.metrics)
    points, labels = loaded.datamodule.splits["test"]
    with torch.no_grad():
        accuracy = ((loaded.task.network(points).squeeze(-1) > 0).float() == labels).float().mean()
    assert float(accuracy) == pytest.approx(run.metrics["test/acc"])


def test_a_task_loads_from_its_checkpoint_without_arguments(rings_runs):
    run = rings_runs[1]
    task = RingsTask.load_from_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")
    points = torch.randn(64, 2)
    with torch.no_grad():
        assert torch.equal(task.network(points), run.task.network.cpu()(points))
    assert task.network.widths == [4]


def test_init_from_starts_a_new_run_from_another_runs_weights(rings_runs, tmp_path):
    source = rings_runs[0]
    # A learning rate too small to move them: the new run's weights are the source's.
    run = train(
        [
            "experiment=rings",
            f"init_from={source.run_dir}",
            "trainer.max_steps=1",
            "optimizer.lr=1e-30",
            f"paths.log_dir={tmp_path}",
        ]
    )
    assert run.run_dir.parent.parent.parent == tmp_path  # a new run dir, in its own log dir
    best = torch.load(source.run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    for name, tensor in run.task.network.state_dict().items():  # the weights, not the metrics
        assert torch.allclose(tensor.cpu(), best[f"network.{name}"])
    with pytest.raises(ConfigError) as error:
        train(
            [
                "experiment=rings",
                f"init_from={source.run_dir}",
                "model.hidden_nodes=5",
                f"paths.log_dir={tmp_path}",
            ]
        )
    assert "layer network.hidden.0.weight is (3, 2) in the checkpoint but (5, 2) here" in str(
        error.value
    )


def test_bad_values_raise_config_error_in_python(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.hidden_nodes=0: expected a positive integer"):
        train(["experiment=rings", "model.hidden_nodes=0", f"paths.log_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="unknown key; model has"):
        train(["experiment=rings", "model.width=3", f"paths.log_dir={tmp_path}"])


def test_omp_num_threads_sets_torch_threads_when_the_config_does_not(monkeypatch):
    from nnlab.train import configure_threads

    threads = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert configure_threads(None) == torch.get_num_threads() == 1
        assert configure_threads(2) == 2  # the config's own value wins
    finally:
        torch.set_num_threads(threads)


def test_a_sweep_from_python_returns_one_row_per_job_as_the_report_reads_them(tmp_path):
    from nnlab.api import sweep
    from nnlab.errors import BadInput

    log_dir = f"paths.log_dir={tmp_path / 'logs'}"
    rows = sweep(
        [
            "experiment=rings",
            "model.hidden_nodes=1,2",
            "trainer.max_steps=50",
            log_dir,
            "hydra/launcher=basic",
            "logger=none",
        ]
    )
    assert [row["model.hidden_nodes"] for row in rows] == [1, 2]
    assert [row["status"] for row in rows] == ["completed", "completed"]
    for row in rows:  # the metrics of each job's metrics.json, and its dir
        saved = read_metrics(row["dir"])
        assert row["val/acc"] == saved["val/acc"] and row["dir"].parent.parent.name == "multiruns"
    failed = sweep(
        [
            "experiment=rings",
            "model.hidden_nodes=1,2",
            "trainer.max_epochs=0",
            log_dir,
            "hydra/launcher=basic",
        ]
    )  # every job fails alone: rows say so
    assert [row["status"].split(":")[0] for row in failed] == ["failed", "failed"]
    with pytest.raises(BadInput, match="exited with 2 before any job"):
        sweep(["experiment=rings", "model.hidden_nodez=1,2", log_dir])
