"""Hyperparameter search with Optuna (a maintained release, not the one Hydra's plugin pins).

`hparams_search=rings_optuna` runs it: Optuna's TPE sampler proposes values for the keys in
`hydra.sweeper.params`, Hydra's launcher runs the trials (in parallel, `n_jobs` at a time),
and each trial's metrics.json value of `metric` goes back to Optuna. The study lives in an
SQLite file named after it, outside any timestamped sweep dir, so running the same command
again continues it: finished trials are kept, not redone, and `n_trials` counts them all.
A trial that fails (a NaN loss, an exception) is recorded as failed; the search goes on.

The parameters are written in Hydra's sweep syntax (nnlab.search_space).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import optuna
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from nnlab.config import check_choice, check_int
from nnlab.errors import ConfigError, Interrupted
from nnlab.search_space import check_same_space, search_space

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
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self._check()
            distributions, arguments = search_space(self.params, arguments)
            study = self._study()
            check_same_space(study, distributions)
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
            try:
                results = self.launcher.launch(jobs, initial_job_idx=job)
            except KeyboardInterrupt:  # Ctrl-C: the trials stay RUNNING in the study
                self._stop(study, sweep_dir, signal.SIGINT, finished)
            stops = [_interruption(result) for result in results]
            for trial, result, stop in zip(trials, results, stops, strict=True):
                value = _value(result, self.metric)
                if stop is not None:
                    continue  # left RUNNING: the next search runs it again
                if value is None:
                    study.tell(trial, state=TrialState.FAIL)
                    log.warning("Trial %d failed; the search goes on", trial.number)
                else:
                    study.tell(trial, value)
                finished += 1
            if any(stops):
                signum = next(stop for stop in stops if stop is not None).signum
                self._stop(study, sweep_dir, signum, finished)
            self._check_metric(results)
            job += len(trials)
        self._save_results(study, sweep_dir)

    def _stop(self, study: optuna.Study, sweep_dir: Path, signum: int, finished: int) -> NoReturn:
        """End an interrupted search as a run ends: one line, exit 128 + the signal's number."""
        self._save_results(study, sweep_dir)
        print(
            f"nnlab: search {self.study_name} interrupted by {signal.Signals(signum).name} with"
            f" {finished} of {self.n_trials} trials done; the same command continues it, and the"
            " unfinished trials run again",
            file=sys.stderr,
        )
        raise SystemExit(128 + signum)

    def _check_same_goal(self, study: optuna.Study) -> None:
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

    def _check_metric(self, results: list[JobReturn]) -> None:
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

    def _study(self) -> optuna.Study:
        return optuna.create_study(
            study_name=self.study_name,
            storage=self._storage_url(),
            direction=self.direction,
            sampler=optuna.samplers.TPESampler(seed=self.seed),
            load_if_exists=True,
        )

    def _requeue_interrupted(self, study: optuna.Study) -> int:
        """Queue again the trials a killed search left running; return the trials done.

        An interrupted trial is closed as failed (SQLite keeps it), remembered in the study's
        `interrupted` attribute so that it does not count against `n_trials`, and its
        parameters are queued, so the next trial reruns it.
        """
        interrupted = set(study.user_attrs.get("interrupted", []))
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            study.enqueue_trial(trial.params)
            interrupted.add(trial.number)
            log.warning("Trial %d was interrupted; it runs again", trial.number)
        study.set_user_attr("interrupted", sorted(interrupted))
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        return sum(trial.number not in interrupted for trial in done)

    def _storage_url(self) -> str | None:
        if self.storage is None:
            return None
        path = Path(self.storage).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"

    def _save_results(self, study: optuna.Study, sweep_dir: Path) -> None:
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


def _override_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _interruption(result: JobReturn) -> Interrupted | None:
    """The signal that stopped a trial (SIGINT, SIGTERM), if one did."""
    # A failed job keeps its exception in _return_value; `return_value` would raise it.
    error = result._return_value if result.status == JobStatus.FAILED else None
    return error if isinstance(error, Interrupted) else None


def _value(result: JobReturn, metric: str) -> float | None:
    """The trial's metric, or None when it failed or the metric is missing or not finite."""
    if result.status != JobStatus.COMPLETED or not isinstance(result.return_value, dict):
        return None
    value = result.return_value.get(metric)
    return float(value) if value is not None and math.isfinite(float(value)) else None
