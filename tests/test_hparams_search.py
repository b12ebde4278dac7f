"""The Optuna search: it resumes from its SQLite study, and failed trials do not end it."""

from __future__ import annotations

import optuna
import pytest
import yaml
from conftest import run_dirs

from nnlab.errors import ConfigError
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
