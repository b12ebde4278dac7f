"""The Optuna search: it resumes from its SQLite study, and failed trials do not end it."""

from __future__ import annotations

import optuna
import pytest
import yaml
from conftest import run_dirs

from nnlab.errors import ConfigError
from nnlab.hparams_search import distribution


def search(cli, tmp_path, trials, *extra):
    return cli(
        "hparams_search=rings_optuna",
        f"hydra.sweeper.n_trials={trials}",
        "trainer.max_steps=300",
        *extra,
        multirun=True,
    )


def load_study(tmp_path):
    storage = f"sqlite:///{tmp_path / 'logs' / 'rings' / 'searches' / 'rings_optuna.db'}"
    return optuna.load_study(study_name="rings_optuna", storage=storage)


def test_a_search_resumes_where_it_stopped_without_redoing_trials(cli, tmp_path):
    assert search(cli, tmp_path, 2).returncode == 0
    first = [(t.number, t.params, t.value) for t in load_study(tmp_path).trials]
    assert len(first) == 2 and all(value is not None for *_, value in first)

    assert search(cli, tmp_path, 4).returncode == 0  # the same command, a larger budget
    study = load_study(tmp_path)
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == first
    assert len(study.trials) == 4
    assert len(run_dirs(tmp_path / "logs")) == 4  # 2 + 2 runs: nothing redone
    sweeps = sorted((tmp_path / "logs" / "rings" / "multiruns").iterdir())
    results = yaml.safe_load((sweeps[-1] / "optimization_results.yaml").read_text())
    assert results["completed"] == 4 and results["best_value"] == study.best_value


def test_a_trial_left_running_by_a_killed_search_is_rerun(cli, tmp_path):
    # What SQLite holds after a search is killed mid-trial: a trial still RUNNING.
    (tmp_path / "logs" / "rings" / "searches").mkdir(parents=True)
    storage = f"sqlite:///{tmp_path / 'logs' / 'rings' / 'searches' / 'rings_optuna.db'}"
    study = optuna.create_study(study_name="rings_optuna", storage=storage, direction="maximize")
    killed = study.ask(
        {
            "model.hidden_nodes": optuna.distributions.IntDistribution(1, 8),
            "model.activation": optuna.distributions.CategoricalDistribution(
                ["sigmoid", "relu", "tanh"]
            ),
            "optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 3e-2, log=True),
        }
    )
    killed_params = killed.params

    assert search(cli, tmp_path, 2).returncode == 0
    trials = load_study(tmp_path).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert trials[1].params == killed_params  # rerun first, with the same values
    assert [t.state for t in trials[1:]] == [optuna.trial.TrialState.COMPLETE] * 2
    assert len(run_dirs(tmp_path / "logs")) == 2  # the budget counts the 2 that ran, not the kill


def test_a_failing_trial_is_recorded_and_the_search_goes_on(cli, tmp_path):
    # A command-line sweep joins the search; trials drawing the unknown activation raise.
    result = search(cli, tmp_path, 5, "model.activation=choice(relu, no_such)")
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


def test_a_study_refuses_a_changed_search_space_before_any_trial(cli, tmp_path):
    assert search(cli, tmp_path, 1).returncode == 0
    result = search(cli, tmp_path, 2, "model.activation=choice(relu, gelu)")
    assert result.returncode == 2
    assert (
        "bad config model.activation='choice(relu, gelu)': study rings_optuna searched"
        " choice(sigmoid, relu, tanh)" in result.stderr
    )
    assert len(load_study(tmp_path).trials) == 1


def test_parameter_syntax_becomes_optuna_distributions():
    assert distribution("a", "choice(relu, tanh)").choices == ("relu", "tanh")
    ints = distribution("n", "range(1, 9)")
    assert (ints.low, ints.high, ints.step) == (1, 8, 1)
    lr = distribution("lr", "tag(log, interval(1e-4, 3e-2))")
    assert (lr.low, lr.high, lr.log) == (1e-4, 3e-2, True)
    with pytest.raises(ConfigError):
        distribution("x", "7")
