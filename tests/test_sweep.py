"""A multirun sweep: parallel jobs, one run dir each, all under one sweep dir."""

from __future__ import annotations

import yaml
from conftest import read_metrics, run_dirs

from nnlab.runtime import available_cores


def test_sweep_writes_one_run_dir_per_job(cli, tmp_path):
    result = cli(
        "experiment=rings",
        "trainer.max_steps=300",
        "model.hidden_nodes=1,2",
        "model.activation=sigmoid,relu",
        "hydra.launcher.n_jobs=2",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 4
    (sweep_dir,) = {job.parent for job in jobs}
    assert sweep_dir.parent == tmp_path / "logs" / "rings" / "multiruns"
    assert (sweep_dir / "multirun.yaml").is_file()

    seen = set()
    for job in jobs:
        assert read_metrics(job)["status"] == "completed"
        model = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["model"]
        seen.add((model["hidden_nodes"], model["activation"]))
        # the job's dir says which job it is
        assert f"model.hidden_nodes={model['hidden_nodes']}" in job.name
        threads = max(1, available_cores() // 2)
        assert f"with {threads} torch thread(s)" in (job / "train.log").read_text()
    assert seen == {(1, "sigmoid"), (1, "relu"), (2, "sigmoid"), (2, "relu")}
