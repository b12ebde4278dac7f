"""The Optuna search: it continues from its SQLite study, and failed trials do not end it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from conftest import read_metrics, replace_launch, run_dirs
from optuna.trial import TrialState

from nnlab.errors import ConfigError
from nnlab.overrides import as_value
from nnlab.sweep.search import RESULTS_FILE, OptunaSweeper
from nnlab.sweep.space import distribution, search_space

Cli = Callable[..., subprocess.CompletedProcess]


def search(cli: Cli, trials: int, *extra: str) -> Any:
    """A search of `trials` in all, its trials in its own process (Hydra's basic launcher),
    without the trials' figures (`cli` skips them; the slow tests' searches draw them).

    The parallel launcher's path is the SIGTERM test's, with joblib's worker processes.
    """
    return cli(
        "hparams_search=rings_optuna",
        f"hydra.sweeper.n_trials={trials}",
        "trainer.max_steps=100",
        *extra,
        "hydra/launcher=basic",
        multirun=True,
    )


def load_study(tmp_path: Path) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'logs' / 'rings' / 'searches' / 'rings_optuna.db'}"
    return optuna.load_study(study_name="rings_optuna", storage=storage)


def results_of_last_sweep(tmp_path: Path) -> dict[str, Any]:
    last_sweep = sorted((tmp_path / "logs" / "rings" / "multiruns").iterdir())[-1]
    return yaml.safe_load((last_sweep / RESULTS_FILE).read_text())


def test_a_search_continues_where_it_stopped_without_redoing_trials(cli, tmp_path):
    assert search(cli, 1).returncode == 0
    first = [(t.number, t.params, t.value) for t in load_study(tmp_path).trials]
    assert len(first) == 1 and all(value is not None for *_, value in first)

    assert search(cli, 2).returncode == 0  # the same command, a larger budget
    study = load_study(tmp_path)
    assert [(t.number, t.params, t.value) for t in study.trials[:1]] == first
    assert len(study.trials) == 2
    assert len(run_dirs(tmp_path / "logs")) == 2  # 1 + 1 runs: nothing redone
    # the sampler is seeded afresh when the search continues: new values, not the first again
    assert [t.params for t in study.trials[1:]] != [params for _, params, _ in first]
    results = results_of_last_sweep(tmp_path)
    assert results["study_trials"] == {
        "completed": 2,
        "failed": 0,
        "pruned": 0,
        "running": 0,
        "not_counted": 0,
    }
    assert results["this_sweep"] == {"completed": 1, "failed": 0, "pruned": 0}
    assert results["best_value"] == study.best_value
    assert results["best_params"] == study.best_params


def test_a_failing_trial_is_recorded_and_the_search_goes_on(cli, tmp_path):
    # A command-line sweep joins the search; trials drawing the unknown activation raise.
    result = search(cli, 5, "model.activation=choice(relu, no_such)")
    assert result.returncode == 0, result.stderr
    trials = load_study(tmp_path).trials
    assert len(trials) == 5
    expected = {"relu": TrialState.COMPLETE, "no_such": TrialState.FAIL}
    assert [t.state for t in trials] == [expected[t.params["model.activation"]] for t in trials]
    assert {t.params["model.activation"] for t in trials} == {"relu", "no_such"}
    assert all(0 <= t.value <= 1 for t in trials if t.state == TrialState.COMPLETE)
    failed = sum(t.state == TrialState.FAIL for t in trials)
    assert results_of_last_sweep(tmp_path)["this_sweep"] == {
        "completed": 5 - failed,
        "failed": failed,
        "pruned": 0,
    }


def test_the_sampler_named_draws_the_trials(cli, tmp_path):
    """`hydra.sweeper.sampler=random`: the first trial's values are those Optuna's
    RandomSampler draws with the search's seed, over the same space."""
    from omegaconf import OmegaConf

    from nnlab.train import CONFIG_DIR

    result = search(cli, 1, "hydra.sweeper.sampler=random", "hydra.sweeper.n_jobs=1")
    assert result.returncode == 0, result.stderr
    assert results_of_last_sweep(tmp_path)["sampler"] == "RandomSampler"
    params = OmegaConf.load(CONFIG_DIR / "hparams_search" / "rings_optuna.yaml").hydra.sweeper
    space, _ = search_space(OmegaConf.to_container(params.params), [])
    drawn = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask(space)
    assert load_study(tmp_path).trials[0].params == drawn.params


def test_the_grid_sampler_runs_every_combination_once_and_the_study_is_plotted(cli, tmp_path):
    result = search(
        cli,
        4,
        "hydra.sweeper.sampler=grid",
        "hydra.sweeper.n_jobs=2",
        "trainer.max_steps=20",
        "model.hidden_nodes=1,2",
        "model.activation=sigmoid,relu",
        "optimizer.lr=0.01",
    )
    assert result.returncode == 0, result.stderr
    combinations = {tuple(sorted(t.params.items())) for t in load_study(tmp_path).trials}
    assert combinations == {
        (("model.activation", a), ("model.hidden_nodes", n))
        for a in ("sigmoid", "relu")
        for n in (1, 2)
    }
    # Optuna's plots of the study, as PNGs and as TensorBoard images in the sweep dir
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    sweep_dir = sorted((tmp_path / "logs" / "rings" / "multiruns").iterdir())[-1]
    for name in ("optimization_history", "param_importances"):
        assert (sweep_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = EventAccumulator(str(sweep_dir), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()["images"]
    assert sorted(tags) == ["study/optimization_history", "study/param_importances"]
    (image,) = events.Images("study/param_importances")
    assert image.encoded_image_string == (sweep_dir / "param_importances.png").read_bytes()


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("hydra.sweeper.sampler=nope", "hydra.sweeper.sampler='nope': expected one of: tpe,"),
        pytest.param(
            "hydra.sweeper.sampler=cmaes",
            "CmaEsSampler needs the cmaes package: pip install",
            marks=pytest.mark.skipif(bool(find_spec("cmaes")), reason="cmaes is installed"),
        ),
        ("+hydra.sweeper.sampler_args.n_startup=3", "TPESampler refused it (TypeError"),
        ("hydra.sweeper.sampler=grid", "'grid': optimizer.lr is tag(log, interval(0.0001"),
    ],
)
def test_a_sampler_that_cannot_work_is_refused_before_any_trial(cli, tmp_path, setting, says):
    result = search(cli, 2, setting)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("nnlab: bad config hydra.sweeper.sampler") and says in line
    assert not list((tmp_path / "logs").rglob("metrics.json"))


def test_a_search_whose_trials_all_fail_exits_1(cli, tmp_path):
    result = search(cli, 2, "model.activation=choice(no_such, nor_this)")
    assert result.returncode == 1
    assert "nnlab: no trial of study rings_optuna completed; `nnlab-report" in result.stderr
    assert [t.state for t in load_study(tmp_path).trials] == [TrialState.FAIL] * 2


def sigterm_during_first_trial(tmp_path: Path, command: list[str], trials: int = 1) -> None:
    """Start the search, SIGTERM its process once `trials` trials have checkpointed; check its
    end."""
    logs = tmp_path / "logs"
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while len(list(logs.glob("rings/multiruns/*/*/checkpoints/last.ckpt"))) < trials:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no trial reached its first checkpoint: {process.communicate()[1]}")
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "nnlab: search rings_optuna interrupted by SIGTERM; the same command continues" in stderr


def test_a_full_disk_where_hydra_writes_a_trial_stops_the_search_with_4(cli, tmp_path, monkeypatch):
    """Hydra writes a trial's .hydra/ files before it runs: a full disk there stops the
    launcher. The search ends as a signal ends it, its trials queued again, with exit 4."""
    import errno

    def on_a_full_disk(real_launch):
        def launch(jobs, initial_job_idx):
            raise OSError(errno.ENOSPC, "No space left on device", "x/.hydra/config.yaml")

        return launch

    with monkeypatch.context() as patch:
        replace_launch(patch, on_a_full_disk)
        stopped = search(cli, 2)
    assert stopped.returncode == 4, stopped.stderr
    assert stopped.stderr.splitlines()[-1] == (
        "nnlab: search rings_optuna stopped by a full disk: free some space; the same command "
        "continues it, and its unfinished trials run again"
    )
    # The basic launcher runs one trial at a time: the one under way is queued again.
    assert [t.state for t in load_study(tmp_path).trials] == [TrialState.FAIL, TrialState.WAITING]
    # Queued again, as after a signal: the next search runs them first (the SIGTERM test's).


@pytest.mark.slow
def test_sigterm_stops_a_search_with_143_and_the_same_command_resumes_its_trial_exactly(
    cli, tmp_path
):
    # The basic launcher: the trial runs in the search's own process, and the signal reaches
    # it there. (Joblib's workers, stopped by the same nnlab.sweeps, are tests/test_sweep.py's.)
    overrides = ["hparams_search=rings_optuna", "hydra.sweeper.n_trials=2", "hydra/launcher=basic"]
    overrides.append("trainer.max_steps=3000")
    command = [sys.executable, "-m", "nnlab.train", "-m", f"paths.log_dir={tmp_path / 'logs'}"]
    sigterm_during_first_trial(tmp_path, [*command, *overrides])
    # One trial at a time in this process: the first is interrupted, closed as failed and
    # queued again; the second is never asked for
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    (interrupted,) = run_dirs(tmp_path / "logs")
    assert read_metrics(interrupted)["status"] == "interrupted"
    assert trials[1].user_attrs["run_dir"] == str(interrupted)  # its job recorded it
    stopped_at = torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=True)

    again = cli(*overrides, multirun=True)  # the same command
    assert again.returncode == 0, again.stderr
    after = load_study(tmp_path).trials
    assert [t.state for t in after] == [TrialState.FAIL] + [TrialState.COMPLETE] * 2
    assert after[1].params == trials[0].params  # the queued one first, resumed in place:
    assert after[1].user_attrs["run_dir"] == str(interrupted)
    assert list((interrupted / ".hydra" / "resumed").iterdir())
    assert stopped_at["global_step"] > 0
    resumed = read_metrics(interrupted)
    assert after[1].value == resumed["val/acc"]
    log = (interrupted / "train.log").read_text()
    assert "Restored all states from the checkpoint" in log  # Lightning's: resumed, not rerun
    params = [f"{k}={as_value(v)}" for k, v in after[1].params.items()]  # the same, uninterrupted
    single = f"paths.log_dir={tmp_path / 'single'}"
    assert cli("experiment=rings", "trainer.max_steps=3000", *params, single).returncode == 0
    (run,) = run_dirs(tmp_path / "single")
    uninterrupted = read_metrics(run)
    assert resumed.pop("status") == uninterrupted.pop("status") == "completed"
    assert resumed == pytest.approx(uninterrupted, rel=1e-5)
    assert results_of_last_sweep(tmp_path)["study_trials"] == {
        "completed": 2,
        "failed": 0,
        "pruned": 0,
        "running": 0,
        "not_counted": 1,
    }


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.n_trials=0"], "bad config hydra.sweeper.n_trials=0: expected an integer"),
        (["hydra.sweeper.direction=up"], "bad config hydra.sweeper.direction='up': expected one"),
        (["hydra.sweeper.storage=/proc/nnlab/s.db"], "bad config hydra.sweeper.storage='/proc"),
        (["model.hidden_nodes=choice(1,"], "bad config model.hidden_nodes='choice(1,': cannot"),
        (["hydra.sweeper.pruner=mean"], "bad config hydra.sweeper.pruner='mean': expected one"),
        (
            ["hydra.sweeper.metric=[]", "hydra.sweeper.direction=[]"],
            "bad config hydra.sweeper.metric=[]: expected a metric name",
        ),
        (
            [
                "hydra.sweeper.sampler=grid",
                "model.hidden_nodes=1,2",
                "model.activation=relu",
                "optimizer.lr=0.01",
                "+hydra.sweeper.sampler_args.search_space={x:[1,2]}",
            ],
            "a grid's search_space names the searched keys: ['model.hidden_nodes']",
        ),
        (
            ["hydra.sweeper.metric=[val/acc,val/loss]"],
            "bad config hydra.sweeper.direction='maximize': expected one direction for each of",
        ),
        (
            ["hydra.sweeper.metric=[val/acc,val/loss]", "hydra.sweeper.direction=[maximize,up]"],
            "bad config hydra.sweeper.direction='up': expected one of: maximize, minimize",
        ),
        (
            [
                "hydra.sweeper.metric=[val/acc,val/loss]",
                "hydra.sweeper.direction=[maximize,minimize]",
                "hydra.sweeper.pruner=median",
            ],
            "bad config hydra.sweeper.pruner='median': Optuna prunes only a study of one metric",
        ),
        (
            ["hydra.sweeper.pruner=median", "+hydra.sweeper.pruner_args.n_startup_trials=-1"],
            "bad config hydra.sweeper.pruner_args={'n_startup_trials': -1}: MedianPruner refused",
        ),
        (
            ["hydra.sweeper.pruner=hyperband", "hydra.sweeper.storage=null"],
            "bad config hydra.sweeper.storage=None: a pruned trial reports to its study",
        ),
    ],
)
def test_bad_search_settings_exit_2_before_any_trial(cli, tmp_path, overrides, message):
    result = search(cli, 1, *overrides)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert run_dirs(tmp_path / "logs") == []


def test_a_value_on_the_command_line_takes_its_key_out_of_the_search(cli, tmp_path):
    assert search(cli, 1, "model.hidden_nodes=7").returncode == 0
    (trial,) = load_study(tmp_path).trials
    assert "model.hidden_nodes" not in trial.params
    (run,) = run_dirs(tmp_path / "logs")
    assert (
        yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["model"]["hidden_nodes"] == 7
    )
    assert "model.hidden_nodes=7" in results_of_last_sweep(tmp_path)["fixed"]


def test_a_metric_that_no_trial_reports_stops_the_search_without_binding_the_study(cli, tmp_path):
    result = search(cli, 6, "hydra.sweeper.metric=val/accuracy")
    assert result.returncode == 2
    assert "bad config hydra.sweeper.metric='val/accuracy': not among the trials' metrics:" in (
        result.stderr
    )
    assert "val/acc" in result.stderr.rsplit("metrics:", 1)[1]
    assert len(load_study(tmp_path).trials) == 1  # the first trial, not all 6

    fixed = search(cli, 1)  # the corrected command continues the study; that 1 does not count
    assert fixed.returncode == 0, fixed.stderr
    assert results_of_last_sweep(tmp_path)["study_trials"] == {
        "completed": 1,
        "failed": 0,
        "pruned": 0,
        "running": 0,
        "not_counted": 1,
    }


def test_a_study_refuses_another_search_and_a_search_needs_multirun(cli, tmp_path):
    assert search(cli, 1).returncode == 0
    result = search(cli, 2, "model.activation=choice(relu, gelu)")
    assert result.returncode == 2
    assert (
        "bad config model.activation='choice(relu, gelu)': study rings_optuna searched"
        " choice(sigmoid, relu, tanh); keep its space or name a new study" in result.stderr
    )
    assert len(load_study(tmp_path).trials) == 1
    single = cli("hparams_search=rings_optuna")
    assert single.returncode == 2
    assert "a search runs its trials as a sweep: add -m" in single.stderr


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "val/loss"}, "metric='val/loss': study s optimises val/acc"),
        ({"direction": "minimize"}, "direction='minimize': study s was created to maximize"),
        ({"params": {"n": "range(1, 5)"}}, "n='range(1, 5, 1)': study s searched range(1, 9, 1)"),
        ({"params": {}}, "bad config n: study s searched it over range(1, 9, 1)"),
        ({"params": {"n": "range(1, 9)", "m": "a,b"}}, "m='choice(a, b)': study s did not"),
    ],
)
def test_a_study_continues_only_the_search_it_began(change, message):
    settings = {
        "study_name": "s",
        "storage": None,
        "metric": "val/acc",
        "direction": "maximize",
        "n_trials": 1,
        "n_jobs": 1,
        "seed": 0,
        "params": {"n": "range(1, 9)"},
    }
    first = OptunaSweeper(**settings)
    study = optuna.create_study(direction="maximize")
    space, _ = search_space(first.params, [])
    study.set_user_attr("search", first._search_record(space))  # as after its first trial
    first._check_same_search(study, space)  # the same search: it continues

    changed = OptunaSweeper(**(settings | change))
    with pytest.raises(ConfigError, match=re.escape(message)):
        changed._check_same_search(study, search_space(changed.params, [])[0])


def test_parameter_syntax_becomes_optuna_distributions():
    assert distribution("a", "choice(relu, tanh)").choices == ("relu", "tanh")
    ints = distribution("n", "range(1, 9)")
    assert (ints.low, ints.high, ints.step) == (1, 8, 1)
    lr = distribution("lr", "tag(log, interval(1e-4, 3e-2))")
    assert (lr.low, lr.high, lr.log) == (1e-4, 3e-2, True)
    assert distribution("n", "tag(log, range(1, 65))").log
    stepped = distribution("n", "range(1, 10, 4)")  # 1, 5, 9
    assert (stepped.low, stepped.high, stepped.step) == (1, 9, 4)
    assert distribution("p", "range(0.5, 2.0, 0.5)").choices == (0.5, 1.0, 1.5)
    assert distribution("a", "relu,tanh").choices == ("relu", "tanh")
    assert distribution("c", "null,1.0").choices == (None, 1.0)
    assert distribution("s", "'a b',c").choices == ("a b", "c")
    with pytest.raises(ConfigError, match="a searched key must be in the config"):
        search_space({}, ["+model.width=1,2"])
    with pytest.raises(ConfigError, match="a log scale needs an interval above 0"):
        distribution("lr", "tag(log, interval(0, 1))")
    for spec in ["7", "interval(3, 1)", "range(5, 1)"]:
        with pytest.raises(ConfigError, match="expected choice"):
            distribution("x", spec)
    for spec in ["tag(lg, interval(1, 2))", "tag(log, choice(1, 2))", "tag(log, range(0, 8, 2))"]:
        with pytest.raises(ConfigError, match=r"tag|log scale"):
            distribution("x", spec)


def test_sampled_values_go_back_to_hydra_as_the_same_values():
    assert [as_value(v) for v in (None, True, 3, 0.1, "relu")] == [
        "null",
        "true",
        "3",
        "0.1",
        "relu",
    ]
    assert as_value("a b") == "'a b'" and as_value("null") == "'null'"
    assert as_value("it's") == "'it\\'s'"


def search_command(tmp_path: Path, trials: int, *extra: str) -> list[str]:
    """A search as its own process, on the study file under tmp_path, Optuna beating each
    second (a trial whose process stops beating for 2 s is failed and queued again)."""
    command = [sys.executable, "-m", "nnlab.train", "-m", f"paths.log_dir={tmp_path / 'logs'}"]
    command += ["hparams_search=rings_optuna", f"hydra.sweeper.n_trials={trials}"]
    command += ["hydra.sweeper.n_jobs=1", "hydra.sweeper.heartbeat_interval=1"]
    return [*command, "hydra/launcher=basic", "trainer.max_steps=100", *extra]


@pytest.mark.slow
def test_two_searches_share_one_study_and_its_budget(tmp_path):
    # Started together on a new SQLite file: both create it, neither runs the other's trial.
    searches = [
        subprocess.Popen(
            search_command(tmp_path, 5), cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for search_process in searches:
        _, stderr = search_process.communicate(timeout=300)
        assert search_process.returncode == 0, stderr
        assert "Traceback" not in stderr
    trials = load_study(tmp_path).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 5  # n_trials is the study's whole budget
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states
    # any extra trial lost a race for the last places: closed unrun, marked over budget
    assert all(t.user_attrs.get("over_budget") for t in trials if t.state == TrialState.PRUNED)
    assert len(run_dirs(tmp_path / "logs")) == 5  # each trial ran once, in one process


@pytest.mark.slow
def test_a_dead_searchs_trial_is_run_again_by_another_search(cli, tmp_path):
    logs = tmp_path / "logs"
    killed = subprocess.Popen(search_command(tmp_path, 2, "trainer.max_steps=3000"), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not list(logs.glob("rings/multiruns/*/*/checkpoints/last.ckpt")):
        assert killed.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    killed.kill()  # SIGKILL: no handler runs, the trial stays RUNNING; only its heartbeat stops
    killed.wait()
    assert [t.state for t in load_study(tmp_path).trials] == [TrialState.RUNNING]

    (killed_dir,) = run_dirs(logs)  # no metrics.json: killed before it could say how it ended
    again = cli(*search_command(tmp_path, 2, "trainer.max_steps=3000")[4:], multirun=True)
    assert again.returncode == 0, again.stderr
    dead, *rest = load_study(tmp_path).trials
    assert dead.state == TrialState.FAIL  # failed by Optuna's heartbeat check, then retried
    assert [t.state for t in rest] == [TrialState.COMPLETE, TrialState.COMPLETE]
    (retry,) = [t for t in rest if t.system_attrs.get("failed_trial") == dead.number]
    assert retry.params == dead.params
    # resumed in place, from the last.ckpt its killed job left, to the end of its budget
    assert retry.user_attrs["run_dir"] == str(killed_dir)
    assert "Restored all states from the checkpoint" in (killed_dir / "train.log").read_text()
    assert read_metrics(killed_dir)["status"] == "completed"


def test_trials_run_without_a_barrier_n_jobs_at_a_time(cli, tmp_path, monkeypatch):
    """With n_jobs=2 a trial starts as soon as another ends. The first trial here runs until
    three later ones have ended: a batched launch would wait for it before starting the
    third, and the first would time out. Never more than 2 run at once; the budget exactly."""
    import threading

    from hydra.core.utils import JobReturn, JobStatus
    from omegaconf import OmegaConf

    lock, ended_three = threading.Lock(), threading.Event()
    running: list[int] = []
    most_at_once, ended = [0], []

    def with_the_first_trial_held(real_launch):
        def launch(jobs, initial_job_idx):
            assert len(jobs) == 1  # one trial per launch
            with lock:
                running.append(initial_job_idx)
                most_at_once[0] = max(most_at_once[0], len(running))
            if initial_job_idx == 0:
                assert ended_three.wait(30), "the first trial held back the others"
            job_dir = tmp_path / f"job{initial_job_idx}"
            job_dir.mkdir()
            (job_dir / "metrics.json").write_text('{"val/acc": 0.5, "status": "completed"}')
            result = JobReturn(status=JobStatus.COMPLETED, _return_value={"val/acc": 0.5})
            result.hydra_cfg = OmegaConf.create(
                {"hydra": {"runtime": {"output_dir": str(job_dir)}}}
            )
            with lock:
                running.remove(initial_job_idx)
                ended.append(initial_job_idx)
                if len(ended) == 3:
                    ended_three.set()
            return [result]

        return launch

    replace_launch(monkeypatch, with_the_first_trial_held)
    result = cli(
        "hparams_search=rings_optuna",
        "hydra.sweeper.n_trials=6",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        multirun=True,
    )
    assert result.returncode == 0, result.stderr
    assert ended[:3] == [1, 2, 3] and sorted(ended) == list(range(6))
    assert most_at_once[0] == 2
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6


def test_a_pruned_trial_stops_at_its_first_validation_behind_the_others(cli, tmp_path):
    """The median pruner, after one trial that learns: a trial that cannot learn (lr 1e-9) is
    pruned at its first validation, keeps its last.ckpt, and counts as pruned in the study."""
    fixed = ["model.hidden_nodes=8", "model.activation=tanh", "hydra.sweeper.pruner=median"]
    fixed += ["+hydra.sweeper.pruner_args.n_startup_trials=1", "trainer.max_steps=1000"]
    assert search(cli, 1, *fixed, "optimizer.lr=0.03").returncode == 0
    result = search(cli, 2, *fixed, "optimizer.lr=1e-9")
    assert result.returncode == 0, result.stderr
    learnt, pruned = load_study(tmp_path).trials
    assert (learnt.state, pruned.state) == (TrialState.COMPLETE, TrialState.PRUNED)
    assert sorted(learnt.intermediate_values) == [4, 9]  # epochs of 100 steps
    assert list(pruned.intermediate_values) == [4]  # stopped at its first validation
    assert pruned.intermediate_values[4] < learnt.intermediate_values[4]
    run = run_dirs(tmp_path / "logs")[-1]
    assert read_metrics(run)["status"] == "pruned"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 500
    results = results_of_last_sweep(tmp_path)
    assert results["this_sweep"] == {"completed": 0, "failed": 0, "pruned": 1}
    assert results["study_trials"]["pruned"] == 1


def test_several_metrics_make_a_multi_objective_study_and_its_pareto_front(cli, tmp_path):
    result = search(
        cli,
        3,
        "hydra.sweeper.metric=[val/acc,val/loss]",
        "hydra.sweeper.direction=[maximize,minimize]",
        "trainer.max_steps=100",
    )
    assert result.returncode == 0, result.stderr
    study = load_study(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = study.trials
    for trial, run in zip(trials, run_dirs(tmp_path / "logs"), strict=True):
        metrics = read_metrics(run)
        assert trial.values == pytest.approx([metrics["val/acc"], metrics["val/loss"]])

    def beaten(t: Any) -> bool:
        (acc, loss) = t.values
        return any(
            u.values[0] >= acc and u.values[1] <= loss and u.values != t.values for u in trials
        )

    front = sorted(t.number for t in trials if not beaten(t))
    results = results_of_last_sweep(tmp_path)
    assert sorted(row["trial"] for row in results["pareto_front"]) == front
    row = results["pareto_front"][0]
    assert row["val/acc"] == trials[row["trial"]].values[0]
    assert row["model.hidden_nodes"] == trials[row["trial"]].params["model.hidden_nodes"]
    assert "Pareto front of ['val/acc', 'val/loss']" in result.stderr
    sweep_dir = sorted((tmp_path / "logs" / "rings" / "multiruns").iterdir())[-1]
    for name in ("pareto_front", "optimization_history-val_acc", "optimization_history-val_loss"):
        assert (sweep_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    # nnlab-report's report.md shows the front: the figure and one row per trial on it
    from nnlab.analysis.report import main as report_main

    report_main([str(sweep_dir)])
    markdown = (sweep_dir / "report.md").read_text()
    section = markdown.split("## Pareto front")[1]
    assert "![pareto_front](pareto_front.png)" in section
    table = [line for line in section.split("\n\n")[2].splitlines() if line.startswith("| ")]
    assert table[0].startswith("| trial | val/acc | val/loss | model.hidden_nodes")
    assert sorted(int(line.split("|")[1]) for line in table[1:]) == front


@pytest.mark.slow
def test_sigterm_stops_a_search_of_parallel_trials_and_both_run_again(cli, tmp_path):
    """Two trials at once in joblib's workers, each launched by a thread of the search: SIGTERM
    stops both, the search exits 143 once they have saved, and both are queued again."""
    overrides = ["hparams_search=rings_optuna", "hydra.sweeper.n_trials=4"]
    overrides += ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_jobs=2"]
    command = [sys.executable, "-m", "nnlab.train", "-m", f"paths.log_dir={tmp_path / 'logs'}"]
    sigterm_during_first_trial(tmp_path, [*command, *overrides, "trainer.max_steps=40000"], 2)
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2
    statuses = sorted(read_metrics(job)["status"] for job in run_dirs(tmp_path / "logs"))
    assert statuses == ["interrupted", "interrupted"]
    for job in run_dirs(tmp_path / "logs"):
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert {t.params["model.hidden_nodes"] for t in trials[2:]} == {
        t.params["model.hidden_nodes"] for t in trials[:2]
    }


def test_a_trial_recorded_outside_the_log_dir_starts_afresh_and_writes_nothing_there(cli, tmp_path):
    """A trial's recorded run dir is data from a storage others may write: a dir outside this
    search's log dir, even one that looks like an unfinished run, is never written into."""
    outside = tmp_path / "outside" / "multiruns" / "stamp" / "0_x"
    (outside / "checkpoints").mkdir(parents=True)
    (outside / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    (outside / ".hydra").mkdir()
    (outside / ".hydra" / "config.yaml").write_text("task_name: rings\n")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "outside").rglob("*"))
    storage = f"sqlite:///{tmp_path / 'logs' / 'rings' / 'searches' / 'rings_optuna.db'}"
    (tmp_path / "logs" / "rings" / "searches").mkdir(parents=True)
    study = optuna.create_study(study_name="rings_optuna", storage=storage, direction="maximize")
    params = {"model.hidden_nodes": 3, "model.activation": "relu", "optimizer.lr": 0.01}
    study.enqueue_trial(params, user_attrs={"run_dir": str(outside)})

    assert search(cli, 1).returncode == 0
    (trial,) = load_study(tmp_path).trials
    assert trial.state == TrialState.COMPLETE and trial.params == params
    (run,) = run_dirs(tmp_path / "logs")
    assert trial.user_attrs["run_dir"] == str(run)  # a dir of its own, which its job recorded
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "outside").rglob("*")) == before
