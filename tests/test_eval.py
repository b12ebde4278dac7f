"""nnlab-eval: a run's checkpoint tested again from its own config."""

from __future__ import annotations

import pytest
from conftest import read_metrics, run_command, run_dirs

from nnlab.errors import ConfigError
from nnlab.run.eval import evaluate, saved_config
from nnlab.run.eval import main as eval_main


def test_eval_reproduces_the_runs_test_metrics_and_leaves_its_files_alone(cli, tmp_path):
    run = cli("experiment=rings", "trainer.max_steps=700", "model.hidden_nodes=3", analyse=True)
    assert run.returncode == 0, run.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    before = (run_dir / "metrics.json").read_text()
    metrics = evaluate(run_dir, "last")
    recorded = read_metrics(run_dir)
    assert metrics["test/acc"] == pytest.approx(recorded["test/acc"])
    assert metrics["test/loss"] == pytest.approx(recorded["test/loss"], rel=1e-6)
    (eval_dir,) = (run_dir / "evals").iterdir()
    assert read_metrics(eval_dir)["status"].startswith("completed; tested ")
    assert (eval_dir / "figures" / "decision_boundary.png").is_file()
    assert (run_dir / "metrics.json").read_text() == before

    # another test set, same model: 20 points per class instead of 500
    other = evaluate(run_dir, "last", ["data.test_per_class=20"])
    assert other["test/acc"] * 40 == pytest.approx(round(other["test/acc"] * 40))

    # values read as Hydra reads them (5e-2 is a number, yes a string), one process to test
    overrides = ["optimizer.lr=5e-2", "task_name=yes", "trainer.devices=1"]
    cfg = saved_config(run_dir, overrides, tmp_path / "eval")
    assert cfg.optimizer.lr == 0.05 and cfg.task_name == "yes"
    assert (cfg.trainer.devices, cfg.trainer.strategy) == (1, "auto")
    with pytest.raises(ConfigError, match="not a key of the run's config"):
        saved_config(run_dir, ["data.no_such=1"], tmp_path / "eval")


def test_eval_names_what_is_wrong(tmp_path):
    result = run_command(eval_main, [f"run_dir={tmp_path}"], tmp_path)
    assert result.returncode == 2
    assert f"nnlab-eval: bad config run_dir='{tmp_path}': not an nnlab run dir" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_value_the_data_refuses_when_testing_is_named_and_leaves_no_eval_dir(
    cli, tmp_path, tiny_mnist
):
    data = [f"paths.data_dir={tiny_mnist}", "data.download=false"]
    assert cli("experiment=mnist_mlp", *data, "trainer.max_steps=1").returncode == 0
    (run_dir,) = run_dirs(tmp_path / "logs")
    result = run_command(eval_main, [f"run_dir={run_dir}", "data.test_subset=100000"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert "nnlab-eval: bad config data.test_subset=100000: " in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "evals").exists() or not list((run_dir / "evals").iterdir())
