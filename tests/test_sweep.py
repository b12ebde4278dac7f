"""A multirun sweep: parallel jobs, one run dir each, all under one sweep dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml
from conftest import read_metrics, replace_launch, run_command, run_dirs, sigterm_at_validation

from nnlab.analysis.report import main as report_main


@pytest.mark.slow
def test_sweep_writes_one_run_dir_per_job(process_cli, tmp_path):
    result = process_cli(  # a new process: the workers' lines reach its console
        "experiment=rings",
        "trainer.max_steps=300",
        "model.hidden_nodes=1,2",
        "model.activation=sigmoid",
        "threads=null",  # the automatic share: cores / jobs running at once
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 2
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
        cores = len(os.sched_getaffinity(0))
        threads = max(1, cores // min(cores, 2))  # n_jobs=-1: 2 jobs at once, on 2+ cores
        assert f"with {threads} torch thread(s)" in (job / "train.log").read_text()
    assert seen == {(1, "sigmoid"), (2, "sigmoid")}
    # the shared terminal gets one result line per job; the INFO logs stay in each train.log
    assert sum(": completed in " in line for line in result.stdout.splitlines()) == 2
    assert f"Sweep {sweep_dir}: 2 completed." in result.stdout  # its closing line
    assert "Instantiating" not in result.stderr and "GPU available" not in result.stderr


def test_a_bad_job_fails_alone_and_the_sweep_reports_it(cli, tmp_path):
    result = cli(
        "experiment=rings", "trainer.max_steps=200", "model.hidden_nodes=2,0", multirun=True
    )
    assert result.returncode != 0
    assert "bad config model.hidden_nodes=0: expected a positive integer" in result.stderr
    statuses = {
        yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["model"][
            "hidden_nodes"
        ]: read_metrics(job)["status"]
        for job in run_dirs(tmp_path / "logs")
    }
    assert statuses[2] == "completed"
    assert statuses[0].startswith("failed: bad config model.hidden_nodes=0")


@pytest.mark.parametrize("where", ["in a job", "in Hydra's launcher"])
def test_a_full_disk_ends_the_sweep_with_exit_4_and_its_summary(cli, tmp_path, monkeypatch, where):
    """A job that fills the disk fails alone (exit 4 for a single run); where Hydra writes a
    job's .hydra/ files, before the job runs, the launcher itself stops. Either way the sweep
    ends with its one line, naming the full disk, and exit 4 (it was three tracebacks)."""
    import errno

    from nnlab.tasks.rings import RingsTask

    full = OSError(errno.ENOSPC, "No space left on device", "figures/x.png")
    if where == "in a job":

        def analyse_on_a_full_disk(self, datamodule):
            if self.network.widths == [3]:
                raise full
            return real_analyse(self, datamodule)

        real_analyse = RingsTask.analyse
        monkeypatch.setattr(RingsTask, "analyse", analyse_on_a_full_disk)
    else:

        def on_a_full_disk(real_launch):
            def launch(jobs, initial_job_idx):
                real_launch(jobs[:1], initial_job_idx)  # the first job; then the disk is full
                raise full

            return launch

        replace_launch(monkeypatch, on_a_full_disk)
    result = cli(
        "experiment=rings",
        "trainer.max_steps=100",
        "logger=none",
        "model.hidden_nodes=2,3",
        multirun=True,
        analyse=True,
    )
    assert result.returncode == 4, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("nnlab: sweep")]
    ended = {  # Hydra's stop: job 2 never started, and has no dir
        "in a job": ": 1 completed, 1 failed (first: failed: disk full while writing",
        "in Hydra's launcher": ": 1 completed, 1 not run (first: not run: the disk filled up",
    }[where]
    assert line.startswith("nnlab: sweep ") and ended in line
    assert "Free some space, then run the failed jobs again. nnlab-report " in line
    assert "Traceback" not in result.stderr
    statuses = sorted(
        read_metrics(job).get("status", "none") for job in run_dirs(tmp_path / "logs")
    )
    assert statuses[0] == "completed"
    assert len(statuses) == (2 if where == "in a job" else 1)  # Hydra's stop: no dir for job 2


def test_a_stopped_sweep_prints_a_resume_command_that_works_as_pasted(cli, tmp_path, monkeypatch):
    """`ckpt_path=<its dir>` failed as written: a job's dir name holds '=', which Hydra's
    grammar takes only in quotes."""
    import shlex

    from nnlab.tasks.rings import RingsTask
    from nnlab.train import main

    overrides = ["experiment=rings", "trainer.max_steps=800", "logger=none"]
    with monkeypatch.context() as patch:
        patch.setattr(RingsTask, "on_validation_start", sigterm_at_validation(500))
        stopped = cli(*overrides, "model.hidden_nodes=2,3", multirun=True)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    lines = stopped.stderr.splitlines()
    summary = next(i for i, line in enumerate(lines) if line.startswith("nnlab: sweep stopped"))
    assert lines[summary].endswith(
        "1 interrupted, 1 not run. "
        f"nnlab-report {run_dirs(tmp_path / 'logs')[0].parent} lists them; "
        "resume the sweep with the command below"
    )
    (command,) = lines[summary + 1 :]
    assert command.startswith("  nnlab-train -m ") and "model.hidden_nodes=2,3" in command
    arguments = shlex.split(command)[1:]  # as a shell reads it
    resumed = run_command(main, arguments, tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    jobs = run_dirs(tmp_path / "logs")  # the interrupted job resumed, the other one ran
    assert len(jobs) == 2 and {read_metrics(j)["status"] for j in jobs} == {"completed"}
    (interrupted,) = [j for j in jobs if j.name.endswith("hidden_nodes=2")]
    assert "Restored all states" in (interrupted / "train.log").read_text()


@pytest.mark.slow
def test_sigterm_stops_the_whole_sweep_and_no_job_starts_after_it(tmp_path):
    # 6 long jobs on 2 workers: the signal comes while the first two train.
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "nnlab.train", "-m", f"paths.log_dir={logs}"]
    command += ["experiment=rings", "trainer.max_steps=200000", "hydra.launcher.n_jobs=2"]
    command += ["model.hidden_nodes=1,2,3", "model.activation=sigmoid,relu"]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(list(logs.glob("rings/multiruns/*/*/checkpoints/last.ckpt"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    workers = psutil.Process(process.pid).children(recursive=True)
    signalled = time.time()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 143, stderr
    assert "nnlab: sweep stopped by SIGTERM: 2 interrupted, 4 not run." in stderr
    assert "Traceback" not in stderr
    _, alive = psutil.wait_procs(workers, timeout=20)
    assert not alive  # no worker trains on, or waits, after the sweep
    jobs = run_dirs(logs)
    statuses = [read_metrics(job)["status"] for job in jobs]
    assert sorted(statuses)[:2] == ["interrupted", "interrupted"] and len(jobs) == 6
    for job, status in zip(jobs, statuses, strict=True):
        if status == "interrupted":  # saved where it stopped, to resume
            assert (job / "checkpoints" / "last.ckpt").stat().st_mtime >= signalled
        else:  # started no training after the signal
            assert status.startswith("not run") and not (job / "checkpoints").exists()

    report_main([str(jobs[0].parent)])
    assert "6 runs, 0 completed, 6 not." in (jobs[0].parent / "report.md").read_text()


@pytest.mark.slow
def test_a_sweep_killed_by_sigkill_leaves_no_worker_and_its_jobs_saved(tmp_path):
    # No handler runs on SIGKILL: the workers see their sweep's process gone, and end.
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "nnlab.train", "-m", f"paths.log_dir={logs}"]
    command += ["experiment=rings", "trainer.max_steps=200000", "hydra.launcher.n_jobs=2"]
    command += ["model.hidden_nodes=1,2,3,4"]
    process = subprocess.Popen(command, cwd=tmp_path, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list(logs.glob("rings/multiruns/*/*/checkpoints/last.ckpt"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    workers = psutil.Process(process.pid).children(recursive=True)
    process.kill()
    process.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive  # within 10 s, none trains on or waits for work
    jobs = run_dirs(logs)
    statuses = [read_metrics(job)["status"] for job in jobs]
    assert sorted(statuses)[:2] == ["interrupted", "interrupted"]  # saved, to resume
    for job, status in zip(jobs, statuses, strict=True):
        if status != "interrupted":  # a queued job that a worker took: it ends before training
            assert status.startswith("not run") and not (job / "checkpoints").exists()


def test_hydras_sweep_forms_over_config_groups_work(cli, tmp_path):
    # glob() over the experiments (those needing no image data), as in plain Hydra
    result = cli("experiment=glob(*,exclude=[mnist*,fashion*])", "debug=fdr", multirun=True)
    assert result.returncode == 0, result.stderr
    jobs = run_dirs(tmp_path / "logs")
    assert [job.name for job in jobs] == [
        "0_experiment=rings",
        "1_experiment=series_rnn",
        "2_experiment=wave",
    ]  # named by what varies; debug=fdr, the same in every job, is left out
    assert [read_metrics(job)["status"] for job in jobs] == ["completed"] * 3
    assert "3 completed." in result.stdout


@pytest.mark.slow
def test_a_sweep_killed_by_sigkill_resumes_whole_with_one_command(cli, tmp_path):
    sweep = ["experiment=rings", "model.hidden_nodes=1,2,3,4,5,6", "trainer.max_steps=2000"]
    command = [sys.executable, "-m", "nnlab.train", "-m", f"paths.log_dir={tmp_path / 'logs'}"]
    process = subprocess.Popen([*command, *sweep], cwd=tmp_path, stderr=subprocess.DEVNULL)
    multiruns, deadline = tmp_path / "logs" / "rings" / "multiruns", time.monotonic() + 240

    def training() -> list:  # jobs that saved last.ckpt and have not ended
        saved = multiruns.glob("*/*/checkpoints/last.ckpt")
        return [c.parent.parent for c in saved if not (c.parent.parent / "metrics.json").exists()]

    while len(list(multiruns.glob("*/*/metrics.json"))) < 2 or not training():
        assert process.poll() is None and time.monotonic() < deadline, "the sweep ended first"
        time.sleep(0.05)
    workers = psutil.Process(process.pid).children(recursive=True)
    process.kill()  # SIGKILL: the sweep's process says nothing; its workers save and end
    process.wait()
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, "a worker outlived its sweep"
    (sweep_dir,) = multiruns.iterdir()
    # a job that was starting may have ended with nothing to say (killed after its grace)
    before = {
        d.name: read_metrics(d)["status"] if (d / "metrics.json").exists() else None
        for d in run_dirs(sweep_dir)
    }
    assert len(before) < 6 and "interrupted" in before.values()  # killed mid-way
    kept = {
        n: (sweep_dir / n / "metrics.json").stat().st_mtime_ns
        for n, status in before.items()
        if status == "completed"
    }

    # the same command (its analysis on, as the sweep's), plus ckpt_path
    resumed = cli(*sweep, "ckpt_path=last", multirun=True, analyse=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Sweep {sweep_dir}: 6 completed" in resumed.stdout + resumed.stderr
    jobs = run_dirs(sweep_dir)
    assert len(jobs) == 6 and {read_metrics(d)["status"] for d in jobs} == {"completed"}
    for name, written in kept.items():  # completed jobs were not trained again
        assert (sweep_dir / name / "metrics.json").stat().st_mtime_ns == written
    for name in (n for n, s in before.items() if s == "interrupted"):  # resumed in place
        assert "Restored all states" in (sweep_dir / name / "train.log").read_text()

    plain = cli(*sweep, f"paths.log_dir={tmp_path / 'plain'}", multirun=True)
    assert plain.returncode == 0, plain.stderr
    for job in jobs:  # each job's metrics are an uninterrupted sweep's
        (same,) = (tmp_path / "plain").glob(f"rings/multiruns/*/{job.name}")
        assert read_metrics(job) == read_metrics(same)


def test_a_sweep_resumes_only_with_its_own_overrides(cli, tmp_path):
    nothing = cli("experiment=rings", "model.hidden_nodes=1,2", "ckpt_path=last", multirun=True)
    assert nothing.returncode == 2 and "no sweep to resume under" in nothing.stderr
    first = cli("experiment=rings", "model.hidden_nodes=1,2", "trainer.max_steps=50", multirun=True)
    assert first.returncode == 0, first.stderr
    other = cli("experiment=rings", "model.hidden_nodes=1,3", "ckpt_path=last", multirun=True)
    assert other.returncode == 2
    said = "experiment=rings model.hidden_nodes=1,2 trainer.max_steps=50`: resume it with those"
    assert said in other.stderr
    reordered = cli(  # the order numbers the jobs: another order, other dirs
        "model.hidden_nodes=1,2",
        "experiment=rings",
        "trainer.max_steps=50",
        "ckpt_path=last",
        multirun=True,
    )
    assert reordered.returncode == 2 and said in reordered.stderr
    search = cli("hparams_search=rings_optuna", "ckpt_path=last", multirun=True)
    assert search.returncode == 2
    assert "a search continues by running its command again, without ckpt_path" in search.stderr
    again = cli(
        "experiment=rings",
        "model.hidden_nodes=1,2",
        "trainer.max_steps=50",
        "ckpt_path=last",
        multirun=True,
    )
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout.count("completed before; kept as it was")
        + again.stderr.count("completed before; kept as it was")
        == 2
    )


def test_a_resumed_sweep_runs_a_crashed_job_again_and_keeps_the_others(cli, tmp_path, monkeypatch):
    from nnlab.tasks.rings import RingsTask

    sweep = ["experiment=rings", "model.hidden_nodes=2,3", "trainer.max_steps=100", "logger=none"]

    def crash_with_two_nodes(self):  # a job's crash: a bug, a node's failure
        if str(self.trainer.default_root_dir).endswith("hidden_nodes=2"):
            raise RuntimeError("the node went away")

    with monkeypatch.context() as patch:
        patch.setattr(RingsTask, "on_train_start", crash_with_two_nodes)
        crashed = cli(*sweep, multirun=True)
    assert crashed.returncode == 1 and "1 completed, 1 failed" in crashed.stderr
    jobs = run_dirs(tmp_path / "logs")
    statuses = {j.name: read_metrics(j)["status"] for j in jobs}
    assert statuses[jobs[0].name].startswith("failed: RuntimeError: the node went away")
    kept = [(jobs[1] / n).stat().st_mtime_ns for n in ("metrics.json", ".hydra/config.yaml")]

    resumed = cli(*sweep, "ckpt_path=last", multirun=True)
    assert resumed.returncode == 0, resumed.stderr
    assert {read_metrics(j)["status"] for j in jobs} == {"completed"}
    again = [(jobs[1] / n).stat().st_mtime_ns for n in ("metrics.json", ".hydra/config.yaml")]
    assert again == kept  # not trained again, and its record kept
    assert list((jobs[1] / ".hydra" / "resumed").iterdir())  # this command's files beside it


@pytest.mark.slow
def test_each_parallel_worker_gets_its_own_device_round_robin(process_cli, tmp_path):
    """On the CPU: the launcher gets a list of device ids, and each job says what it saw."""
    result = process_cli(
        "experiment=rings",
        "model.hidden_nodes=1,2,3,4",
        "trainer.max_steps=50",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.devices=[5,7]",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    jobs = run_dirs(tmp_path / "logs")
    seen = {}
    for job in jobs:
        device = read_metrics(job)["device"]  # what metrics.json, and so the report, names
        said = f"on device {device} (CUDA_VISIBLE_DEVICES={device})"
        assert said in (job / "train.log").read_text()
        seen[job.name] = device
    assert sorted(set(seen.values())) == ["5", "7"]  # two workers, one device each
    slots = sorted(p.name for p in (jobs[0].parent / ".devices").iterdir())
    assert slots == ["0", "1"]  # each worker claimed one slot, for all of its jobs
    (sweep_dir,) = {job.parent for job in jobs}
    report = run_command(report_main, [str(sweep_dir)], tmp_path)
    assert report.returncode == 0, report.stderr
    table = (sweep_dir / "report.csv").read_text()
    assert "device" in table.splitlines()[0]


def test_workers_beyond_the_devices_share_them_round_robin(tmp_path, monkeypatch):
    from nnlab.sweep.devices import JOB_DEVICE, take_a_device

    for name in ("CUDA_VISIBLE_DEVICES", JOB_DEVICE):  # set, then unset: put back after
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    taken = []
    for _worker in range(5):  # five worker processes, each its first job
        monkeypatch.delenv(JOB_DEVICE, raising=False)
        taken.append(take_a_device(tmp_path, ["0", "1"]))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == taken[-1]
    assert taken == ["0", "1", "0", "1", "0"]
    assert take_a_device(tmp_path, ["0", "1"]) == "0"  # a worker's next job keeps its device
    assert take_a_device(tmp_path, []) is None  # no devices listed: nothing set
