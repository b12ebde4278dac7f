"""Scale-out on real engines, on this machine (make test-slow): an Optuna study in a real
PostgreSQL server shared by searches, sweeps and searches on a real one-node SLURM cluster with
pre-emption, and DDP over two "nodes".

The servers come from scripts/local_postgres.sh and scripts/local_slurm.sh, started once by
.ci/run (or by hand) before the tests; without NNLAB_POSTGRES_URL, each test worker starts its
own PostgreSQL server. Without the engines the tests skip, saying why; with
NNLAB_REQUIRE_ENGINES=1 (CI) they fail instead.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import suppress
from glob import glob
from pathlib import Path

import optuna
import psutil
import pytest
from conftest import read_metrics, run_dirs
from optuna.trial import TrialState

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
NNLAB_TRAIN = [sys.executable, "-m", "nnlab.train"]
ONE_CPU = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def unavailable(why: str) -> None:
    if os.environ.get("NNLAB_REQUIRE_ENGINES") == "1":
        pytest.fail(f"{why} (NNLAB_REQUIRE_ENGINES=1)")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server of scripts/local_postgres.sh: its storage URL. .ci/run starts one
    for the whole run and passes its URL (NNLAB_POSTGRES_URL); else each test worker starts
    its own."""
    if os.environ.get("NNLAB_POSTGRES_URL"):
        yield os.environ["NNLAB_POSTGRES_URL"]
        return
    if not glob("/usr/lib/postgresql/*/bin/pg_ctl") and not shutil.which("pg_ctl"):
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="pip install -e .[postgres]")
    folder = tempfile.mkdtemp(prefix="nnlab-postgres-")  # not under pytest's 0700 folder:
    os.chmod(folder, 0o755)  # the server runs as `postgres` when the tests run as root
    env = {**os.environ, "NNLAB_POSTGRES_DIR": f"{folder}/server"}
    env["NNLAB_POSTGRES_PORT"] = str(free_port())
    up = subprocess.run(
        [SCRIPTS / "local_postgres.sh", "up"], env=env, capture_output=True, text=True
    )
    assert up.returncode == 0, up.stderr
    yield up.stdout.strip()
    subprocess.run([SCRIPTS / "local_postgres.sh", "down"], env=env, check=True)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm() -> None:
    """The SLURM cluster of scripts/local_slurm.sh, up and with a node to run jobs."""
    if shutil.which("sbatch") is None:
        unavailable(
            "SLURM is not installed (apt-get install slurm-wlm slurmdbd munge mariadb-server)"
        )
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True)
    if nodes.returncode != 0 or not {"idle", "mix", "alloc"} & set(nodes.stdout.split()):
        unavailable("no SLURM cluster is up: sudo scripts/local_slurm.sh up")


@pytest.fixture(autouse=True)
def nothing_left_running(tmp_path: Path) -> Iterator[None]:
    """A failed test's processes and SLURM jobs end with it: the node's 2 CPUs are the next
    test's."""
    yield
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.Error):
            child.kill()
    jobs = {p.parent.name.split("_")[0] for p in tmp_path.rglob(".submitit/*/*_submitted.pkl")}
    if jobs and shutil.which("scancel"):
        subprocess.run(["scancel", *sorted(jobs)], capture_output=True)


def recipe(name: str) -> list[str]:
    """The README's command for `name`, word for word, as the shell splits it (comment off)."""
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if name in line]
    assert lines, f"the README shows no {name} command"
    return shlex.split(lines[0].split("  #")[0])


def storage_command(storage: str, log_dir: Path, *extra: str) -> list[str]:
    """The README's multi-machine search, with this test's budget and log dir after it."""
    words = recipe("hydra.sweeper.storage=$STORAGE")
    assert words[0] == "nnlab-train"
    words = [w.replace("$STORAGE", storage) for w in words[1:]]
    settings = ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=1", "trainer.max_steps=100"]
    settings += ["hydra.sweeper.heartbeat_interval=1", "hydra/launcher=basic"]
    settings.append(f"paths.log_dir={log_dir}")
    return [*NNLAB_TRAIN, *words, *settings, *extra]


def test_searches_on_machines_share_a_postgres_study_and_a_killed_trial_runs_again(
    postgres, tmp_path
):
    study_url = postgres
    assert "STORAGE=$(scripts/local_postgres.sh up)" in (ROOT / "README.md").read_text()
    started = {
        name: subprocess.Popen(
            storage_command(study_url, tmp_path / name, *extra),
            cwd=tmp_path,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, extra in (("first", []), ("killed", ["trainer.max_steps=200000"]))
    }
    killed = started.pop("killed")
    deadline = time.monotonic() + 180
    while not list((tmp_path / "killed").glob("rings/multiruns/*/*/checkpoints/last.ckpt")):
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    killed.kill()  # SIGKILL, mid-trial: its trial stays RUNNING until its heartbeat is stale
    killed.wait()
    started["third"] = subprocess.Popen(
        storage_command(study_url, tmp_path / "third"),
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    for process in started.values():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr

    trials = optuna.load_study(study_name="rings_optuna", storage=study_url).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 4  # n_trials: the study's whole budget
    assert TrialState.RUNNING not in states
    (dead,) = [t for t in trials if t.state == TrialState.FAIL]  # only the killed one failed,
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params  # and ran again
    finished = [d for d in run_dirs(tmp_path) if read_metrics_or_none(d) == "completed"]
    assert len(finished) == 4  # each completed trial ran once, in one of the processes


def read_metrics_or_none(run_dir: Path) -> str | None:
    path = run_dir / "metrics.json"
    return read_metrics(run_dir)["status"] if path.is_file() else None


def sacct_states(job: str) -> list[str]:
    """Every state SLURM's accounting recorded for the job (or array), in order, requeues too
    (`CANCELLED by 0` read as CANCELLED)."""
    for _ in range(50):  # slurmctld passes a job's end to slurmdbd within a moment
        lines = subprocess.run(
            ["sacct", "-X", "-D", "-n", "-P", "-o", "State", "-j", job],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        states = [line.split()[0] for line in lines if line.strip()]
        if states and not {"RUNNING", "PENDING", "COMPLETING"} & set(states):
            return states
        time.sleep(0.2)
    return states


def slurm_arrays(sweep_dir: Path) -> list[str]:
    """The SLURM jobs (arrays) that ran a sweep's jobs, from submitit's folders in its dir."""
    folders = (sweep_dir / ".submitit").glob("*/*_submitted.pkl")
    return sorted({path.parent.name.split("_")[0] for path in folders}, key=int)


def test_a_slurm_sweep_completes_with_no_warning_and_reports(slurm, process_cli, tmp_path):
    result = process_cli(
        *ONE_CPU,
        "experiment=rings",
        "model.hidden_nodes=1,2,3,4",
        "trainer.max_steps=100",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    console = result.stdout + result.stderr
    assert not re.search(r"warn", console, re.IGNORECASE), console  # sacct works: no poll warns
    jobs = run_dirs(tmp_path / "logs")
    assert len(jobs) == 4 and {read_metrics(d)["status"] for d in jobs} == {"completed"}
    sweep_dir = jobs[0].parent
    (array,) = slurm_arrays(sweep_dir)
    assert sacct_states(array) == ["COMPLETED"] * 4  # one array of 4 jobs

    report = subprocess.run(
        [sys.executable, "-m", "nnlab.analysis.report", str(sweep_dir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert report.returncode == 0, report.stderr
    rows = list(csv.DictReader((sweep_dir / "report.csv").open()))
    assert sorted(int(float(r["model.hidden_nodes"])) for r in rows) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("asks", "slurm_says"),
    [
        (f"hydra.launcher.cpus_per_task={(os.cpu_count() or 1) + 1}", "More processors requested"),
        ("hydra.launcher.mem_gb=100000", "Memory specification can not be satisfied"),
    ],
)
def test_a_job_asking_more_than_any_node_has_is_refused_in_one_line(
    slurm, process_cli, asks, slurm_says
):
    result = process_cli(
        *ONE_CPU, asks, "experiment=rings", "model.hidden_nodes=1,2", multirun=True
    )
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("[")]
    assert line.startswith("nnlab: bad config hydra.launcher: SLURM refused the jobs (")
    assert slurm_says in line and asks.removeprefix("hydra.launcher.") in line


def start_a_slurm_sweep_and_wait_for_a_checkpoint(
    tmp_path: Path, run: list[str]
) -> tuple[subprocess.Popen, Path, str]:
    """A SLURM sweep (a job array) of `run`, once its first job has saved last.ckpt: the
    sweep's process, that job's dir, and its array's id."""
    sweep = subprocess.Popen(
        [*NNLAB_TRAIN, "-m", f"paths.log_dir={tmp_path / 'logs'}", *ONE_CPU, *run],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    logs, deadline = tmp_path / "logs", time.monotonic() + 180
    while not list(logs.glob("rings/multiruns/*/0_*/checkpoints/last.ckpt")):
        assert sweep.poll() is None and time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    (job_dir,) = logs.glob("rings/multiruns/*/0_*")
    (array,) = slurm_arrays(job_dir.parent)
    return sweep, job_dir, array


RUN = ["experiment=rings", "trainer.max_steps=2000"]


@pytest.mark.parametrize(
    "preempt", [["scontrol", "requeue"], ["scancel", "--signal=TERM"]], ids=["requeue", "sigterm"]
)
def test_a_preempted_slurm_job_saves_and_resumes_in_place_to_the_same_metrics(
    slurm, cli, tmp_path, preempt
):
    sweep, job_dir, array = start_a_slurm_sweep_and_wait_for_a_checkpoint(
        tmp_path, [*RUN, "model.hidden_nodes=3,4"]
    )
    subprocess.run([*preempt, f"{array}_0"], check=True)  # the array's first job only
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output
    assert "2 completed" in output  # the sweep waited for the requeued job

    assert sacct_states(f"{array}_0") == ["REQUEUED", "COMPLETED"]  # stopped once, then ended
    assert sacct_states(f"{array}_1") == ["COMPLETED"]  # its sibling ran once, untouched
    log = (job_dir / "train.log").read_text()
    assert "rings: interrupted" in log and "Restored all states from the checkpoint" in log
    uninterrupted = cli(*RUN, "model.hidden_nodes=3", "paths.log_dir=" + str(tmp_path / "plain"))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    (plain,) = run_dirs(tmp_path / "plain")
    assert read_metrics(job_dir) == read_metrics(plain)  # exact, status "completed" included


def test_a_cancelled_slurm_job_ends_interrupted_and_stays_cancelled(slurm, tmp_path):
    sweep, job_dir, array = start_a_slurm_sweep_and_wait_for_a_checkpoint(
        tmp_path, [*RUN, "model.hidden_nodes=3,4"]
    )
    subprocess.run(["scancel", f"{array}_0"], check=True)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, output
    assert "1 completed, 1 interrupted" in output and "Traceback" not in output
    assert read_metrics(job_dir)["status"] == "interrupted"
    assert (job_dir / "checkpoints" / "last.ckpt").is_file()  # `ckpt_path=` resumes it by hand
    assert sacct_states(f"{array}_0") == ["CANCELLED"]  # not requeued: the cancel stands


def test_an_optuna_search_runs_its_trials_as_slurm_jobs_on_a_postgres_study(
    slurm, postgres, process_cli, tmp_path
):
    result = process_cli(
        *ONE_CPU,
        "hparams_search=rings_optuna",
        f"hydra.sweeper.storage={postgres}",
        "hydra.sweeper.study_name=on_slurm",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "trainer.max_steps=100",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="on_slurm", storage=postgres).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    (sweep_dir,) = {d.parent for d in run_dirs(tmp_path / "logs")}
    arrays = slurm_arrays(sweep_dir)
    assert len(arrays) == 4  # a SLURM job per trial, n_jobs=2 at a time (no barrier)
    assert [s for array in arrays for s in sacct_states(array)] == ["COMPLETED"] * 4


def test_ddp_over_two_nodes_writes_one_run_dir_with_one_process_metrics(cli, tmp_path):
    """Two "nodes" on 127.0.0.1, each started as Lightning's docs start a node (NODE_RANK,
    MASTER_ADDR, MASTER_PORT), each with 2 DDP processes: one run, named the same on both."""
    run = ["experiment=rings", "model.hidden_nodes=3", "trainer.max_steps=600"]
    nodes = ["trainer=ddp_cpu", "trainer.num_nodes=2", "paths.run_name=two_nodes"]
    port = str(free_port())
    started = [
        subprocess.Popen(
            [*NNLAB_TRAIN, *run, *nodes, f"paths.log_dir={tmp_path / 'logs'}"],
            env={
                **os.environ,
                "NODE_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
            },
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for process in started:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    assert run_dir.name == "two_nodes"
    one = cli(*run, f"paths.log_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr
    (single,) = run_dirs(tmp_path / "one")
    assert read_metrics(run_dir) == pytest.approx(read_metrics(single), abs=1e-5)
