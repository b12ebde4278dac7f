"""The Optuna search: it resumes from its SQLite study, and failed trials do not end it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from conftest import run_dirs

from nnlab.errors import ConfigError
from nnlab.hparams_search import RESULTS as RESULTS_FILE
from nnlab.search_space import distribution


def search(cli, tmp_path, trials, *extra, parallel=False):
    """A search of `trials` in all; in-process trials (Hydra's basic launcher) unless parallel."""
    return cli(
        "hparams_search=rings_optuna",
        f"hydra.sweeper.n_trials={trials}",
        "trainer.max_steps=100",
        *extra,
        *([] if parallel else ["hydra/launcher=basic"]),
        multirun=True,
    )


def load_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'logs' / 'rings' / 'searches' / 'rings_optuna.db'}"
    return optuna.load_study(study_name="rings_optuna", storage=storage)


def test_a_search_resumes_where_it_stopped_without_redoing_trials(cli, tmp_path):
    assert search(cli, tmp_path, 2, parallel=True).returncode == 0
    first = [(t.number, t.params, t.value) for t in load_study(tmp_path).trials]
    assert len(first) == 2 and all(value is not None for *_, value in first)

    assert search(cli, tmp_path, 4, parallel=True).returncode == 0  # the same, a larger budget
    study = load_study(tmp_path)
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == first
    assert len(study.trials) == 4
    assert len(run_dirs(tmp_path / "logs")) == 4  # 2 + 2 runs: nothing redone
    sweeps = sorted((tmp_path / "logs" / "rings" / "multiruns").iterdir())
    results = yaml.safe_load((sweeps[-1] / "optimization_results.yaml").read_text())
    assert results["completed"] == 4 and results["best_value"] == study.best_value


def test_a_search_stopped_by_sigterm_exits_143_and_runs_its_unfinished_trial_again(cli, tmp_path):
    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "nnlab.train", "-m", f"paths.log_dir={logs}"]
    command += ["hparams_search=rings_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1"]
    command += ["hydra/launcher=basic"]  # in-process trials: the signal reaches the trial
    process = subprocess.Popen(
        [*command, "trainer.max_steps=40000"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120  # signal once the first trial has saved a checkpoint
    while not list(logs.glob("rings/multiruns/*/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert (
        "search rings_optuna interrupted by SIGTERM with 0 of 2 trials done; the same command"
        " continues it" in stderr
    )
    (stopped,) = load_study(tmp_path).trials
    assert stopped.state == optuna.trial.TrialState.RUNNING

    again = subprocess.run(  # the same search, on a shorter budget per trial
        [*command, "trainer.max_steps=100"], cwd=tmp_path, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] + [
        optuna.trial.TrialState.COMPLETE
    ] * 2
    assert trials[1].params == stopped.params  # run again first, with the same values
    assert len(run_dirs(logs)) == 3  # the stopped trial's run, then 2 trials: the budget holds
    last_sweep = sorted((logs / "rings" / "multiruns").iterdir())[-1]
    results = yaml.safe_load((last_sweep / RESULTS_FILE).read_text())
    assert (results["completed"], results["failed"], results["interrupted_and_rerun"]) == (2, 0, 1)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(cli, tmp_path):
    # A command-line sweep joins the search; trials drawing the unknown activation raise.
    result = search(cli, tmp_path, 5, "model.activation=choice(relu, no_such)", parallel=True)
    assert result.returncode == 0
    trials = load_study(tmp_path).trials
    assert len(trials) == 5
    expected = {"relu": optuna.trial.TrialState.COMPLETE, "no_such": optuna.trial.TrialState.FAIL}
    assert [t.state for t in trials] == [expected[t.params["model.activation"]] for t in trials]
    assert {t.params["model.activation"] for t in trials} == {"relu", "no_such"}
    assert all(0 <= t.value <= 1 for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    sweeps = sorted((tmp_path / "logs" / "rings" / "multiruns").iterdir())
    results = yaml.safe_load((sweeps[-1] / "optimization_results.yaml").read_text())
    assert results["failed"] == sum(t.state == optuna.trial.TrialState.FAIL for t in trials)


def test_parameter_syntax_becomes_optuna_distributions():
    assert distribution("a", "choice(relu, tanh)").choices == ("relu", "tanh")
    ints = distribution("n", "range(1, 9)")
    assert (ints.low, ints.high, ints.step) == (1, 8, 1)
    lr = distribution("lr", "tag(log, interval(1e-4, 3e-2))")
    assert (lr.low, lr.high, lr.log) == (1e-4, 3e-2, True)
    stepped = distribution("n", "range(1, 10, 4)")  # 1, 5, 9
    assert (stepped.low, stepped.high, stepped.step) == (1, 9, 4)
    assert distribution("p", "range(0.5, 2.0, 0.5)").choices == (0.5, 1.0, 1.5)
    assert distribution("a", "relu,tanh").choices == ("relu", "tanh")
    for spec in ["7", "interval(3, 1)", "range(5, 1)"]:
        with pytest.raises(ConfigError, match="expected choice"):
            distribution("x", spec)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["hydra.sweeper.n_trials=0"], "bad config hydra.sweeper.n_trials=0: expected an integer"),
        (["hydra.sweeper.direction=up"], "bad config hydra.sweeper.direction='up': expected one"),
        (["model.hidden_nodes=7"], None),  # fixed for every trial: not an error
    ],
)
def test_sweeper_settings_are_checked_before_any_trial(cli, tmp_path, overrides, message):
    result = search(cli, tmp_path, 1, *overrides)
    if message is None:
        assert result.returncode == 0
        (trial,) = load_study(tmp_path).trials
        assert "model.hidden_nodes" not in trial.params  # taken out of the search
        (run,) = run_dirs(tmp_path / "logs")
        assert (
            yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["model"]["hidden_nodes"]
            == 7
        )
        return
    assert result.returncode == 2 and message in result.stderr
    assert run_dirs(tmp_path / "logs") == []


def test_a_metric_that_no_trial_reports_stops_the_search(cli, tmp_path):
    result = search(cli, tmp_path, 6, "hydra.sweeper.metric=val/accuracy")
    assert result.returncode == 2
    assert "bad config hydra.sweeper.metric='val/accuracy': not among the trial's metrics:" in (
        result.stderr
    )
    assert "val/acc" in result.stderr.rsplit("metrics:", 1)[1]
    assert len(load_study(tmp_path).trials) == 2  # the first batch of n_jobs, not all 6


def test_a_study_keeps_its_space_and_metric_and_a_search_needs_multirun(cli, tmp_path):
    assert search(cli, tmp_path, 1).returncode == 0
    space = search(cli, tmp_path, 2, "model.activation=choice(relu, gelu)")
    assert space.returncode == 2
    assert (
        "bad config model.activation='choice(relu, gelu)': study rings_optuna searched"
        " choice(sigmoid, relu, tanh)" in space.stderr
    )
    metric = search(cli, tmp_path, 2, "hydra.sweeper.metric=val/loss")
    assert metric.returncode == 2
    assert "study rings_optuna optimises val/acc; name a new study" in metric.stderr
    assert len(load_study(tmp_path).trials) == 1
    single = cli("hparams_search=rings_optuna")
    assert single.returncode == 2
    assert "a search runs its trials as a sweep: add -m" in single.stderr
