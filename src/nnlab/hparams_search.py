"""Hyperparameter search with Optuna (a maintained release, not the one Hydra's plugin pins).

`hparams_search=rings_optuna` runs it: Optuna's TPE sampler proposes values for the keys in
`hydra.sweeper.params`, Hydra's launcher runs the trials (in parallel, `n_jobs` at a time),
and each trial's metrics.json value of `metric` goes back to Optuna. The study lives in an
SQLite file named after it, outside any timestamped sweep dir, so running the same command
again continues it: finished trials are kept, not redone, and `n_trials` counts them all.
A trial that fails (a NaN loss, an exception) is recorded as failed; the search goes on.

Parameter syntax is Hydra's sweep syntax: `choice(relu, tanh)`, `int(interval(1, 8))` or
`range(1, 9)` for integers, `interval(1e-4, 1e-1)` for floats, `tag(log, interval(...))` for a
log scale.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from nnlab.config import check_choice, check_int
from nnlab.errors import ConfigError

log = logging.getLogger("nnlab")
RESULTS = "optimization_results.yaml"


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str | None,
        metric: str,
        direction: str,
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        params: dict[str, Any],
    ) -> None:
        self.study_name, self.storage, self.metric = study_name, storage, metric
        self.direction, self.n_trials, self.n_jobs = direction, n_trials, n_jobs
        self.seed, self.params = seed, dict(params)

    def _check(self) -> None:
        """The sweeper's own settings; Hydra builds the sweeper before nnlab can check them."""
        check_int("hydra.sweeper.n_trials", self.n_trials, minimum=1)
        check_int("hydra.sweeper.n_jobs", self.n_jobs, minimum=1)
        check_choice("hydra.sweeper.direction", self.direction, ["maximize", "minimize"])
        if self.seed is not None:
            check_int("hydra.sweeper.seed", self.seed, minimum=0)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self._check()
            distributions, arguments = self._search_space(arguments)
            study = self._study()
            _check_same_space(study, distributions)
            self._check_same_goal(study)
        except ConfigError as error:  # before any trial: one line and exit 2, as for a run
            print(f"nnlab: {error}", file=sys.stderr)
            raise SystemExit(error.exit_code) from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        finished = self._requeue_interrupted(study)
        log.info(
            "Study %s: %d of %d trials done, storage %s",
            self.study_name,
            finished,
            self.n_trials,
            self.storage,
        )
        job = 0
        while finished < self.n_trials:
            trials = [
                study.ask(distributions) for _ in range(min(self.n_jobs, self.n_trials - finished))
            ]
            jobs = [
                [*arguments, *(f"{k}={_override_value(v)}" for k, v in t.params.items())]
                for t in trials
            ]
            results = self.launcher.launch(jobs, initial_job_idx=job)
            for trial, result in zip(trials, results, strict=True):
                value = _value(result, self.metric)
                if value is None:
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("Trial %d failed; the search goes on", trial.number)
                else:
                    study.tell(trial, value)
            self._check_metric(results)
            job += len(trials)
            finished += len(trials)
        self._save_results(study, sweep_dir)

    def _check_same_goal(self, study: Any) -> None:
        """A study optimises one metric in one direction; trials of another would mislead TPE."""
        metric = study.user_attrs.get("metric", self.metric)
        if metric != self.metric:
            raise ConfigError(
                "hydra.sweeper.metric",
                self.metric,
                f"study {self.study_name} optimises {metric}; name a new study"
                " (hydra.sweeper.study_name=...)",
            )
        direction = study.direction.name.lower()
        if direction != self.direction:
            raise ConfigError(
                "hydra.sweeper.direction",
                self.direction,
                f"study {self.study_name} was created to {direction}; name a new study"
                " (hydra.sweeper.study_name=...)",
            )
        study.set_user_attr("metric", self.metric)

    def _check_metric(self, results: list[Any]) -> None:
        """Stop, exit 2, when a trial completed without the metric: no later one would have it."""
        for result in results:
            values = result.return_value if result.status == JobStatus.COMPLETED else None
            if isinstance(values, dict) and self.metric not in values:
                error = ConfigError(
                    "hydra.sweeper.metric",
                    self.metric,
                    f"not among the trial's metrics: {', '.join(sorted(values))}",
                )
                print(f"nnlab: {error}", file=sys.stderr)
                raise SystemExit(error.exit_code)

    def _study(self) -> Any:
        import optuna

        return optuna.create_study(
            study_name=self.study_name,
            storage=self._storage_url(),
            direction=self.direction,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            load_if_exists=True,
        )

    def _requeue_interrupted(self, study: Any) -> int:
        """Queue again the trials a killed search left running; return the trials done.

        An interrupted trial is closed as failed (SQLite keeps it), remembered in the study's
        `interrupted` attribute so that it does not count against `n_trials`, and its
        parameters are queued, so the next trial reruns it.
        """
        from optuna.trial import TrialState

        interrupted = set(study.user_attrs.get("interrupted", []))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params)
            interrupted.add(trial.number)
            log.warning("Trial %d was interrupted; it runs again", trial.number)
        study.set_user_attr("interrupted", sorted(interrupted))
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        return sum(trial.number not in interrupted for trial in done)

    def _search_space(self, arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The distributions of `params` and of the command's own sweeps; the fixed overrides.

        A sweep on the command line (`optimizer.lr='interval(1e-3, 1e-1)'`, `model.depth=1,2`)
        joins the search, replacing a parameter of the same key; a plain value
        (`model.hidden_nodes=7`) takes its key out of the search.
        """
        space = {key: distribution(key, str(spec)) for key, spec in self.params.items()}
        fixed = []
        for override in OverridesParser.create().parse_overrides(arguments):
            if override.is_sweep_override():
                key = override.get_key_element()  # with its + or ++
                space[key] = _distribution_of(override, key, override.input_line)
            else:
                space.pop(override.get_key_element().lstrip("+"), None)  # fixed, not searched
                fixed.append(override.input_line)
        return space, fixed

    def _storage_url(self) -> str | None:
        if self.storage is None:
            return None
        path = Path(self.storage).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def _save_results(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        interrupted = set(study.user_attrs.get("interrupted", []))
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        results: dict[str, Any] = {
            "study": self.study_name,
            "storage": self.storage,
            "completed": len(completed),
            "failed": sum(trial.number not in interrupted for trial in failed),
            "interrupted_and_rerun": len(interrupted),
        }
        if completed:
            results |= {
                "best_value": study.best_value,
                "best_params": study.best_params,
                "metric": self.metric,
            }
            log.info("Best %s %.4f with %s", self.metric, study.best_value, study.best_params)
        (sweep_dir / RESULTS).write_text(yaml.safe_dump(results, sort_keys=False))


def _check_same_space(study: Any, space: dict[str, Any]) -> None:
    """A study continues only over the space it began with; TPE cannot mix two."""
    from optuna.distributions import check_distribution_compatibility

    for trial in study.get_trials(deepcopy=False):
        for key, old in trial.distributions.items():
            if key in space and old != space[key]:
                try:
                    check_distribution_compatibility(old, space[key])
                except ValueError:
                    raise ConfigError(
                        key,
                        _described(space[key]),
                        f"study {study.study_name} searched {_described(old)}; keep its space"
                        " or name a new study (hydra.sweeper.study_name=...)",
                    ) from None


def _described(distribution: Any) -> str:
    """A distribution in the sweep syntax it came from."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return f"range({distribution.low}, {distribution.high + 1}, {distribution.step})"
    interval = f"interval({distribution.low}, {distribution.high})"
    return f"tag(log, {interval})" if distribution.log else interval


def distribution(key: str, spec: str) -> Any:
    """An Optuna distribution from Hydra's sweep syntax (see the module docstring)."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={spec}"])
    return _distribution_of(override, f"hydra.sweeper.params.{key}", spec)


def _distribution_of(override: Any, key: str, spec: str) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep, log_scale = override.value(), "log" in getattr(override.value(), "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        return IntDistribution(int(sweep.start), int(sweep.stop) - 1, step=int(sweep.step or 1))
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log_scale)
        return FloatDistribution(float(low), float(high), log=log_scale)
    expected = "expected choice(...), range(...) or interval(...)"
    raise ConfigError(key, spec, expected)


def _override_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _value(result: Any, metric: str) -> float | None:
    """The trial's metric, or None when it failed or the metric is missing or not finite."""
    if result.status != JobStatus.COMPLETED or not isinstance(result.return_value, dict):
        return None
    value = result.return_value.get(metric)
    return float(value) if value is not None and math.isfinite(float(value)) else None
