"""Scale-out through existing engines: Lightning's DDP, and SLURM's path via submitit."""

from __future__ import annotations

import math

import pytest
import yaml
from conftest import assert_same_completed_metrics, only_run, read_metrics, run_dirs, trained

from nnlab.train import CONFIG_DIR

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_under_ddp_on_two_cpu_processes_into_one_run_dir(
    process_cli, tmp_path, tiny_mnist, experiment
):
    data = [f"paths.data_dir={tiny_mnist}", "data.download=false"]
    images = data if experiment.startswith(("mnist", "fashion")) else []
    overrides = [f"experiment={experiment}", "trainer=ddp_cpu", "debug=fdr", *images]
    run_dir = only_run(process_cli, tmp_path / "ddp", *overrides)  # one, not one per process
    metrics = read_metrics(run_dir)
    assert metrics.pop("status") == "completed" and math.isfinite(metrics["test/loss"])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["rings", "wave"])
def test_the_full_batch_tasks_under_ddp_end_with_one_processs_metrics(
    cli, process_cli, tmp_path, experiment
):
    # 100 steps on each full batch, through Lightning's manual optimization: both processes
    # see the whole training set, and DDP averages their identical gradients at every step.
    overrides = [f"experiment={experiment}", "trainer.max_steps=300", "model.hidden_nodes=4"]
    ddp_dir = only_run(process_cli, tmp_path / "ddp", *overrides, "trainer=ddp_cpu")
    assert not (tmp_path / "logs").exists()  # one run dir, not one per process
    single_dir = only_run(cli, tmp_path / "single", *overrides)
    assert_same_completed_metrics(ddp_dir, single_dir, rel=1e-4, abs=1e-6)


def test_the_full_batch_tasks_many_steps_a_batch_run_under_the_ddp_strategy(config, tmp_path):
    # One process of the DDP strategy (no others to start): the rings' 100 steps a batch go
    # through Lightning's manual optimization, which DDP sees, to the single device's metrics.
    rings = ["experiment=rings", "trainer.max_steps=300", "logger=none"]
    ddp = config(*rings, "trainer=ddp_cpu", "trainer.devices=1")
    single = config(*rings, f"paths.output_dir={tmp_path / 'single'}")
    ddp_metrics, single_metrics = trained(ddp), trained(single)
    assert ddp_metrics.pop("status") == single_metrics.pop("status") == "completed"
    assert ddp_metrics == pytest.approx(single_metrics, rel=1e-5)


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_two_job_sweep(cli, tmp_path):
    result = cli(
        "hydra/launcher=local", "trainer.max_steps=200", "model.hidden_nodes=1,3", multirun=True
    )
    assert result.returncode == 0, result.stderr
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 2 and len({job.parent for job in jobs}) == 1
    assert [read_metrics(job)["status"] for job in jobs] == ["completed", "completed"]
    assert list((jobs[0].parent / ".submitit").iterdir())  # submitit's own job folders
    widths = {
        yaml.safe_load((j / ".hydra" / "config.yaml").read_text())["model"]["hidden_nodes"]
        for j in jobs
    }
    assert widths == {1, 3}


def test_ddp_inside_a_parallel_sweep_is_refused_with_what_to_use(cli):
    result = cli(
        "hydra/launcher=parallel", "trainer=ddp_cpu", "model.hidden_nodes=1,2", multirun=True
    )
    assert result.returncode == 2  # refused before any job starts
    assert "bad config trainer.devices=2: DDP starts its own processes" in result.stderr
    assert "hydra/launcher=slurm" in result.stderr
