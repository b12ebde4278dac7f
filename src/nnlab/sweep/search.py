"""Hyperparameter search with Optuna (a maintained release, not the one Hydra's plugin pins).

`hparams_search=rings_optuna` runs it: Optuna's sampler (TPE, unless `hydra.sweeper.sampler`
names another) proposes values for the keys in `hydra.sweeper.params`, Hydra's launcher runs
the trials (`n_jobs` at a time, a new one as soon as one ends), and the value of `metric` in
each trial's final metrics (those of its metrics.json) goes back to Optuna.
The study lives in an SQLite file named after it, outside any timestamped sweep dir, so the
same command again continues it: finished trials are kept, not redone, and `n_trials` counts
them all. A trial that fails (a NaN loss, an exception) is recorded as failed; the search
goes on. The parameters are written in Hydra's sweep syntax (nnlab.search_space).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

import optuna
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from nnlab.checks import NO_VALUE, BadValue, check_choice, check_int
from nnlab.errors import DISK_FULL, ConfigError, Pruned, stop, stopped
from nnlab.overrides import as_value, parse
from nnlab.run import layout
from nnlab.sweep import signals
from nnlab.sweep.grid import (
    RESUMED,
    ended_without_a_result,
    job_status,
    one_line_if_refused,
    refuse_ddp_without_slurm,
    refused_by_the_cluster,
    start_sweep,
    wait_for_slurm_jobs,
)
from nnlab.sweep.space import Space, described, grid_of, search_space
from nnlab.sweep.study_figures import save_study_figures

log = logging.getLogger("nnlab")
RESULTS_FILE = "optimization_results.yaml"
TRIAL = "NNLAB_OPTUNA_TRIAL"  # the number of the trial a search's job runs (nnlab.sweep.trial)
RUN_DIR = "run_dir"  # a trial's user attribute: its run dir, recorded by its job
OVER_BUDGET = "over_budget"  # a trial another process's took the place of: pruned, never run
STORAGE_ATTEMPTS = 5
MAX_RETRIES = 3  # a trial is run again at most 3 times
NEW_STUDY = "name a new study (hydra.sweeper.study_name=...)"


# hydra.sweeper.sampler: Optuna's samplers by name (a grid is `-m`'s own; CmaEsSampler needs
# the `cmaes` package, which nnlab does not install).
SAMPLERS = {
    "tpe": "TPESampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
    "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler",
    "grid": "GridSampler",  # every combination of the choices and ranges (grid_of)
}
SAMPLER_PACKAGES = {"cmaes": ("cmaes",), "gp": ("scipy",), "qmc": ("scipy",)}


class OptunaSweeper(Sweeper):
    """Hydra's sweeper interface around an Optuna study: Optuna asks, Hydra's launcher runs."""

    config: DictConfig
    launcher: Launcher
    sweep_dir: Path
    fixed: list[str]  # the command's overrides that every trial has

    def __init__(
        self,
        study_name: str,
        storage: str | None,
        metric: str | list[str],
        direction: str | list[str],
        n_trials: int,
        n_jobs: int,
        seed: int | None,
        params: dict[str, Any],
        heartbeat_interval: int = 10,
        sampler: str = "tpe",
        sampler_args: dict[str, Any] | None = None,
        devices: list[Any] | None = None,  # read from the config (nnlab.sweep.devices)
        pruner: str | None = None,
        pruner_args: dict[str, Any] | None = None,
    ) -> None:
        # several metrics, each with its direction: a multi-objective study (a Pareto front)
        self.metrics, self.directions = _listed(metric), _listed(direction)
        self.metric = self.metrics[0] if len(self.metrics) == 1 else self.metrics  # as written
        self.direction = self.directions[0] if len(self.directions) == 1 else self.directions
        self.study_name, self.storage, self.n_trials, self.n_jobs = (
            study_name,
            storage,
            n_trials,
            n_jobs,
        )
        self.seed, self.params = seed, dict(params)
        self.heartbeat_interval = heartbeat_interval
        self.sampler, self.sampler_args = sampler, dict(sampler_args or {})
        self.pruner, self.pruner_args = pruner, dict(pruner_args or {})
        self.rdb: optuna.storages.RDBStorage | None = None  # None: a study in memory
        self.asked: list[int] = []  # the trials of this sweep, in the order asked
        self.running: set[int] = set()  # those of them running now

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Optuna's own heartbeat and retry (marked experimental in Optuna 5), chosen knowingly;
        # nnlab beats for the trials itself (they run in Hydra's launcher, not Study.optimize).
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)
        refuse_ddp_without_slurm(self.config)
        workers = signals.local_workers(self.config)
        try:
            if self.config.get("ckpt_path"):
                reason = "a search continues by running its command again, without ckpt_path"
                raise ConfigError("ckpt_path", self.config.ckpt_path, reason)
            space, self.fixed = search_space(self.params, arguments)
            self.space = space
            self._check_settings()
            study = self._open_study()
            self._check_same_search(study, space)
        except (ConfigError, BadValue) as error:  # before any trial: one line, exit 2
            stop(stopped(error))
        at_once = self._trials_at_once(workers)
        self.sweep_dir = start_sweep(self.config, parse(self.fixed), at_once)
        log.info("Study %s: %d of %d trials taken", self.study_name, _taken(study), self.n_trials)
        with (
            signals.signals_stop_the_sweep(self.sweep_dir, workers > 0) as watch,
            self._heartbeats(study),
        ):
            try:
                with one_line_if_refused(self.config.hydra.launcher):
                    self._run_trials(study, space, at_once, watch)
            except Exception as error:
                refused = refused_by_the_cluster(error, self.config.hydra.launcher)
                if refused is not None:  # before its trial ran: the unfinished run again
                    self._put_back(study)
                    stop(refused)
                if isinstance(error, ConfigError):  # a trial completed without the metric
                    self._save_results(study)
                    stop(error)
                if ended_without_a_result(error):  # the unfinished trials run again
                    wait_for_slurm_jobs(self.sweep_dir)
                    why = "stopped: a SLURM job ended without a result (sacct tells why);"
                    self._stop(study, why, 1)
                if not isinstance(error, OSError) or error.errno not in DISK_FULL:
                    raise
                # Hydra writes a trial's .hydra/ before it runs
                self._stop(study, "stopped by a full disk: free some space;", 4)
        if watch.signum is not None:  # its unfinished trials are queued to run again
            name = signal.Signals(watch.signum).name
            self._stop(study, f"interrupted by {name};", 128 + watch.signum)
        self._save_results(study)
        save_study_figures(study, self.sweep_dir, self.metrics)
        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            sys.exit(
                f"nnlab: no trial of study {self.study_name} completed; `nnlab-report "
                f"{self.sweep_dir}` lists their errors"
            )

    def _trials_at_once(self, workers: int) -> int:
        """`n_jobs` trials at once where the launcher runs jobs elsewhere (joblib's worker
        processes, up to their number, or SLURM's jobs); one at a time where it runs them in
        this process (Hydra's basic launcher, whose jobs change the process's globals)."""
        if workers > 0:
            return min(self.n_jobs, workers)
        return self.n_jobs if "submitit" in str(self.config.hydra.launcher.get("_target_")) else 1

    def _run_trials(
        self, study: optuna.Study, space: Space, at_once: int, watch: signals.Watch
    ) -> None:
        """Run trials until the budget is spent, `at_once` at a time with no barrier: each of
        `at_once` threads asks Optuna for a trial, has the launcher run it alone, tells its
        result, and asks again, so a new trial starts as soon as one ends. A batch of
        `at_once` per launch would wait for its slowest trial (make bench measures both).
        Raises the first error a thread met, once every thread has ended."""
        ended = threading.Condition()  # held to ask or tell; notified when a trial ends
        # a trial's job finds its trial itself in the storage (nnlab.sweep.trial)
        trial_env = f"++hydra.job.env_set.{TRIAL}=" if self.rdb is not None else None
        errors: list[BaseException] = []

        def run_trials() -> None:
            # a signal the watcher took, or one a trial in this thread took and marked
            while not (errors or watch.signum or signals.stopped_by(self.sweep_dir)):
                trial = None
                try:
                    with ended:
                        # This process's trials beat first: another thread's is not stale.
                        self._beat(study, list(self.running))
                        optuna.storages.fail_stale_trials(study)  # a dead process's: run again
                        trial = self._ask(study, space)
                        if trial is None:
                            if not _running(study):
                                return
                            ended.wait(1)  # one may fail and run again, or a signal come
                            continue
                        job_number = len(self.asked) - 1
                    params = [f"{k}={as_value(v)}" for k, v in trial.params.items()]
                    if trial_env:
                        params.append(f"{trial_env}{trial.number}")
                    params += self._in_place(trial)
                    launched = self.launcher.launch([[*self.fixed, *params]], job_number)
                    with ended:
                        self._tell(study, trial, launched[0], space)
                except BaseException as error:  # the main thread raises it
                    errors.append(error)
                finally:
                    with ended:
                        if trial is not None:
                            self.running.discard(trial.number)
                        ended.notify_all()

        if at_once == 1:  # in this thread: a job of the basic launcher takes its own signals
            run_trials()
        else:
            threads = [threading.Thread(target=run_trials) for _ in range(at_once)]
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():  # in short waits: the main thread takes signals between
                    thread.join(0.2)
        if errors:
            raise errors[0]

    def _in_place(self, trial: optuna.Trial) -> list[str]:
        """The overrides that resume a trial in place: one queued again after an interruption
        (a signal, or its search killed) whose run dir, which its job recorded (RUN_DIR), holds
        its unfinished run with a last.ckpt. Its job then runs in that dir, as a resumed
        sweep's job does (nnlab.train.resumes_in_place), and resumes exactly; its Hydra files
        go to .hydra/resumed/<stamp>. Any other trial starts afresh."""
        recorded = trial.user_attrs.get(RUN_DIR)
        if not isinstance(recorded, str) or not self._may_resume_in(Path(recorded)):
            return []
        run_dir = Path(recorded)
        log.info("Trial %d resumes in place: %s", trial.number, run_dir)
        return [
            f"hydra.sweep.dir={as_value(str(run_dir.parent))}",
            f"hydra.sweep.subdir={as_value(run_dir.name)}",
            f"hydra.output_subdir={layout.HYDRA_DIR}/resumed/{layout.run_stamp()}",
            f"++hydra.job.env_set.{RESUMED}=1",
        ]

    def _may_resume_in(self, run_dir: Path) -> bool:
        """Whether a trial's recorded run dir (data from the study's storage, which others may
        write) is one this search resumes in: a job dir of this task's sweeps under this
        search's log dir, with no symbolic link where a run writes, no character Hydra's
        override syntax would read otherwise, not in use, and holding its own unfinished run
        with a last.ckpt (nnlab.train.resumes_in_place). Any other trial starts afresh."""
        from nnlab.train import resumes_in_place

        log_dir = os.path.expanduser(str(self.config.paths.log_dir))
        multiruns = Path(os.path.realpath(log_dir)) / str(self.config.task_name) / "multiruns"
        plain = run_dir.is_absolute() and not {"$", "\\", "'", '"'} & set(str(run_dir))
        if not plain or Path(os.path.realpath(run_dir)).parent.parent != multiruns:
            return False
        try:
            layout.check_no_links(run_dir, RUN_DIR, str(run_dir))
        except ConfigError:
            return False
        holder = layout.lock_holder(run_dir)
        return holder is None and layout.is_run_dir(run_dir) and resumes_in_place(run_dir)

    def _ask(self, study: optuna.Study, space: Space) -> optuna.Trial | None:
        """A new trial within the study's budget, which every process shares, or None.

        Two processes may ask at the same moment for the last place in the budget. Optuna
        numbers trials in the order the storage created them, so the later one finds its
        place taken: it is closed as pruned, marked over budget, and never run.
        """
        if _taken(study) >= self.n_trials and not _queued(study):
            return None
        trial = study.ask(space)
        if _taken(study, before=trial.number) >= self.n_trials:
            trial.set_user_attr(OVER_BUDGET, True)
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            return None
        self.running.add(trial.number)
        self._beat(study, [trial.number])
        self.asked.append(trial.number)
        return trial

    @contextmanager
    def _heartbeats(self, study: optuna.Study) -> Iterator[None]:
        """Optuna's heartbeat for this process's running trials, so that the other processes
        on the study retry them if this one dies (RDB storage only)."""
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.heartbeat_interval):
                try:
                    self._beat(study, list(self.running))
                except SQLAlchemyError as error:  # a busy database: the next beat may pass
                    log.warning("Optuna heartbeat not recorded: %s", str(error).splitlines()[0])

        thread = threading.Thread(target=beat, name="nnlab-optuna-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _beat(self, study: optuna.Study, numbers: list[int]) -> None:
        if self.rdb is not None:
            study_id = self.rdb.get_study_id_from_name(study.study_name)
            for number in numbers:
                trial_id = self.rdb.get_trial_id_from_study_id_trial_number(study_id, number)
                self.rdb.record_heartbeat(trial_id)

    def _check_settings(self) -> None:
        """The sweeper's own settings; Hydra builds the sweeper before nnlab can check them."""
        check_int("hydra.sweeper.n_trials", self.n_trials, minimum=1)
        check_int("hydra.sweeper.n_jobs", self.n_jobs, minimum=1)
        check_int("hydra.sweeper.heartbeat_interval", self.heartbeat_interval, minimum=1)
        if not self.metrics:
            raise ConfigError("hydra.sweeper.metric", self.metric, "expected a metric name")
        for metric in self.metrics:
            if not isinstance(metric, str) or not metric:
                raise ConfigError("hydra.sweeper.metric", self.metric, "expected metric names")
        if len(self.directions) != len(self.metrics):
            reason = f"expected one direction for each of the {len(self.metrics)} metrics"
            raise ConfigError("hydra.sweeper.direction", self.direction, reason)
        for direction in self.directions:
            check_choice("hydra.sweeper.direction", direction, ["maximize", "minimize"])
        check_choice("hydra.sweeper.sampler", self.sampler, SAMPLERS)
        if self.seed is not None:
            check_int("hydra.sweeper.seed", self.seed, minimum=0)
        if self.pruner is not None:
            from nnlab.sweep import trial  # only then: its trials' callback is Lightning's

            check_choice("hydra.sweeper.pruner", self.pruner, trial.PRUNERS)
            trial.make_pruner(self.pruner, self.pruner_args)
            if self.storage is None:
                reason = "a pruned trial reports to its study from its own job: name a storage"
                raise ConfigError("hydra.sweeper.storage", None, reason)
            if len(self.metrics) > 1:
                reason = "Optuna prunes only a study of one metric"
                raise ConfigError("hydra.sweeper.pruner", self.pruner, reason)
        self._make_sampler(self.seed)  # its arguments and its package, before any trial

    def _open_study(self) -> optuna.Study:
        for attempt in range(STORAGE_ATTEMPTS):
            try:
                self.rdb = self._storage()
                study = optuna.create_study(
                    study_name=self.study_name,
                    storage=self.rdb,
                    directions=self.directions,
                    load_if_exists=True,
                )
                break
            except (IntegrityError, OperationalError) as error:
                # Two processes creating the same new SQLite file at once race on its tables
                # (`UNIQUE constraint failed: alembic_version`); the loser finds them made.
                if attempt == STORAGE_ATTEMPTS - 1:
                    reason = str(error).splitlines()[0]
                    raise ConfigError("hydra.sweeper.storage", self.storage, reason) from None
                time.sleep(0.2 * (attempt + 1))
            except (SQLAlchemyError, OSError) as error:
                reason = str(error).splitlines()[0]
                raise ConfigError("hydra.sweeper.storage", self.storage, reason) from None
        # A fresh seed for each continuation: the same one would draw the same values again.
        seed = None if self.seed is None else self.seed + len(study.trials)
        study.sampler = self._make_sampler(seed)
        return study

    def _make_sampler(self, seed: int | None) -> optuna.samplers.BaseSampler:
        """Optuna's sampler `hydra.sweeper.sampler` names, with `sampler_args` and the seed."""
        make = getattr(optuna.samplers, SAMPLERS[self.sampler])
        if self.sampler == "grid":
            make = GridSampler
        for package in SAMPLER_PACKAGES.get(self.sampler, ()):  # Optuna imports it only later
            if importlib.util.find_spec(package) is None:
                reason = f"{make.__name__} needs the {package} package: pip install {package}"
                raise ConfigError("hydra.sweeper.sampler", self.sampler, reason)
        arguments = dict(self.sampler_args)
        if self.sampler == "grid":
            arguments.setdefault("search_space", grid_of(self.space))
            given = arguments["search_space"]
            if not isinstance(given, Mapping) or set(given) != set(self.space):
                reason = f"a grid's search_space names the searched keys: {sorted(self.space)}"
                raise ConfigError("hydra.sweeper.sampler_args", self.sampler_args, reason)
        try:
            return make(**arguments, seed=seed)
        except (TypeError, ValueError, ImportError) as error:  # Optuna's own checks
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            reason = f"{make.__name__} refused it ({type(error).__name__}: {reason})"
            raise ConfigError("hydra.sweeper.sampler_args", self.sampler_args, reason) from None

    def _storage(self) -> optuna.storages.RDBStorage | None:
        """The study's database, with Optuna's heartbeat: a trial whose process stops beating
        for two intervals is failed by the next process that looks, and queued again."""
        url = storage_url(self.storage)
        if url is None:
            return None
        heartbeat = {"heartbeat_interval": self.heartbeat_interval}
        return rdb_storage(url, heartbeat_stale_trial_callback=self.retry, **heartbeat)

    def _check_same_search(self, study: optuna.Study, space: Space) -> None:
        """A study continues only the search it began: the same metric, direction and space.

        The search is recorded with the study's first completed trial, so a command refused
        before any trial completed (a mistyped metric) does not bind the study.
        """
        if [d.name.lower() for d in study.directions] != self.directions:
            began = " and ".join(d.name.lower() for d in study.directions)
            raise ConfigError(
                "hydra.sweeper.direction",
                self.direction,
                f"study {self.study_name} was created to {began}; {NEW_STUDY}",
            )
        recorded = study.user_attrs.get("search")
        if recorded is None:
            return
        if _listed(recorded["metric"]) != self.metrics:
            raise ConfigError(
                "hydra.sweeper.metric",
                self.metric,
                f"study {self.study_name} optimises {recorded['metric']}; {NEW_STUDY}",
            )
        before, now = recorded["space"], self._search_record(space)["space"]
        study_name = f"study {self.study_name}"
        for key in sorted(set(before) | set(now)):
            if key not in now:
                searched = f"{study_name} searched it over {before[key]}"
                raise ConfigError(key, NO_VALUE, f"{searched}; {NEW_STUDY}")
            if key not in before:
                raise ConfigError(key, now[key], f"{study_name} did not search it; {NEW_STUDY}")
            if before[key] != now[key]:
                searched = f"{study_name} searched {before[key]}"
                raise ConfigError(key, now[key], f"{searched}; keep its space or {NEW_STUDY}")

    def _search_record(self, space: Space) -> dict[str, Any]:
        metric = self.metrics if len(self.metrics) > 1 else self.metrics[0]
        return {"metric": metric, "space": {k: described(d) for k, d in space.items()}}

    def _tell(
        self, study: optuna.Study, trial: optuna.Trial, result: JobReturn, space: Space
    ) -> None:
        """Give Optuna the trial's result. A trial that completed without the metric raises
        (no later one would have it): the search stops, the trial not counted."""
        if _stopped_by_a_signal(result) and signals.stopped_by(self.sweep_dir):
            return  # closed and queued again by _stop
        if job_status(result.hydra_cfg) == Pruned.status:  # it reported its values itself
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            log.info("Trial %d pruned", trial.number)
            return
        missing = self._missing_metric(result)
        if missing is not None:
            study.set_user_attr("not_counted", [*_not_counted(study), trial.number])
            study.tell(trial, state=TrialState.FAIL)
            raise missing
        values = [_trial_metric(result, metric) for metric in self.metrics]
        if None in values:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            log.warning("Trial %d failed; the search goes on", trial.number)
        else:  # skipped if another process failed it as stale meanwhile: its retry counts
            study.tell(trial, values, skip_if_finished=True)
            study.set_user_attr("search", self._search_record(space))

    def _missing_metric(self, result: JobReturn) -> ConfigError | None:
        values = result.return_value if result.status == JobStatus.COMPLETED else None
        missing = [m for m in self.metrics if isinstance(values, dict) and m not in values]
        if isinstance(values, dict) and missing:
            which = f"{missing[0]} " if len(self.metrics) > 1 else ""
            available = f"{which}not among the trials' metrics: {', '.join(sorted(values))}"
            return ConfigError("hydra.sweeper.metric", self.metric, available)
        return None

    def _stop(self, study: optuna.Study, why: str, exit_code: int) -> NoReturn:
        """End an interrupted search as a run ends: one line, and exit 128 + the signal's
        number (4 for a full disk). Its trials that did not finish run again (_put_back)."""
        self._put_back(study)
        with suppress(OSError):  # a full disk may not hold them either
            self._save_results(study)
        print(
            f"nnlab: search {self.study_name} {why} the same command continues it, and its "
            "unfinished trials run again",
            file=sys.stderr,
        )
        raise SystemExit(exit_code)

    def _put_back(self, study: optuna.Study) -> None:
        """Close this sweep's trials that did not finish as failed, each queued again as
        Optuna's RetryHeartbeatStaleTrialCallback queues a dead process's: the next search
        runs them first."""
        with suppress(SQLAlchemyError):  # a storage on the full disk: its heartbeat retries them
            for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if frozen.number in self.asked:
                    study.tell(frozen.number, state=TrialState.FAIL)
                    self.retry(study, study.get_trials(deepcopy=False)[frozen.number])

    def _save_results(self, study: optuna.Study) -> None:
        def count(trials: list[FrozenTrial], state: TrialState) -> int:
            counted = (t for t in trials if not t.user_attrs.get(OVER_BUDGET))
            return sum(t.state == state and t.number not in not_counted for t in counted)

        everything = study.get_trials(deepcopy=False)
        retried = _retried(everything)
        not_counted = set(_not_counted(study)) | retried
        this_sweep = [t for t in everything if t.number in self.asked]
        results: dict[str, Any] = {
            "study": self.study_name,
            "storage": storage_url(self.storage),
            "metric": self.metric,
            "direction": self.direction,
            "sampler": type(study.sampler).__name__,
            "study_trials": {
                "completed": count(everything, TrialState.COMPLETE),
                "failed": count(everything, TrialState.FAIL),
                "pruned": count(everything, TrialState.PRUNED),
                "running": count(everything, TrialState.RUNNING),  # in other processes
                "not_counted": len(not_counted),  # run again (interrupted), or a wrong metric
            },
            "this_sweep": {
                "completed": count(this_sweep, TrialState.COMPLETE),
                "failed": count(this_sweep, TrialState.FAIL),
                "pruned": count(this_sweep, TrialState.PRUNED),
            },
            "fixed": self.fixed,  # the overrides every trial of this sweep had
        }
        if any(t.state == TrialState.COMPLETE for t in everything) and len(self.metrics) == 1:
            best = study.best_trial
            results |= {"best_value": best.value, "best_trial": best.number}
            results["best_params"] = best.params
            log.info("Best %s %.4f with %s", self.metric, best.value, best.params)
        elif any(t.state == TrialState.COMPLETE for t in everything):
            results["pareto_front"] = front = [
                {"trial": t.number, **dict(zip(self.metrics, t.values, strict=True)), **t.params}
                for t in sorted(study.best_trials, key=lambda t: t.values)
            ]
            log.info("Pareto front of %s (the trials no other beats on every one):", self.metrics)
            for row in front:
                log.info("  %s", "  ".join(f"{k} {as_value(v)}" for k, v in row.items()))
        (self.sweep_dir / RESULTS_FILE).write_text(yaml.safe_dump(results, sort_keys=False))


def _listed(value: Any) -> list[Any]:
    """A setting that takes one value or a list of them, as a list."""
    return list(value) if isinstance(value, list | tuple | ListConfig) else [value]


def storage_url(storage: str | None) -> str | None:
    """An SQLite URL for a file path; a URL (`postgresql://...`) as it is; None in memory."""
    if storage is None or "://" in storage:
        return storage
    path = Path(storage).expanduser().resolve()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
    except OSError as error:
        reason = f"cannot write there ({error.strerror})"
        raise ConfigError("hydra.sweeper.storage", storage, reason) from None
    if path.is_dir():
        raise ConfigError("hydra.sweeper.storage", storage, "a folder, not a file")
    return f"sqlite:///{path}"


def rdb_storage(url: str, **settings: Any) -> optuna.storages.RDBStorage:
    """Optuna's storage at `url`; writers from several processes wait for SQLite's lock."""
    sqlite = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    return optuna.storages.RDBStorage(url, engine_kwargs=sqlite, **settings)


def _retried(trials: list[FrozenTrial]) -> set[int]:
    """The failed trials that were queued again: their retries count instead."""
    return {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}


def _taken(study: optuna.Study, before: int | None = None) -> int:
    """The trials that use the budget (those numbered below `before`): completed, pruned,
    failed for good, running in any process, or queued; not those run again, over budget, or
    not counted."""
    trials = study.get_trials(deepcopy=False)
    skipped = _retried(trials) | set(_not_counted(study))
    return sum(
        t.state != TrialState.PRUNED or not t.user_attrs.get(OVER_BUDGET)
        for t in trials
        if t.number not in skipped and (before is None or t.number < before)
    )


def _running(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _queued(study: optuna.Study) -> list[FrozenTrial]:
    """Trials queued to run again (WAITING): `study.ask` hands them out first."""
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def _not_counted(study: optuna.Study) -> list[int]:
    return list(study.user_attrs.get("not_counted", []))


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler, less its stop when the grid is done: Study.stop works only inside
    Study.optimize, and raised in the search's `tell` (trials run in Hydra's launcher, not
    optimize). The search stops at its budget, `n_trials`, itself."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def _stopped_by_a_signal(result: JobReturn) -> bool:
    """Whether a signal interrupted the trial, or stopped the search before it started."""
    status = job_status(result.hydra_cfg)
    return status == "interrupted" or status.startswith("not run")


def _trial_metric(result: JobReturn, metric: str) -> float | None:
    """The trial's metric, or None when it failed or the metric is missing or not finite."""
    if result.status != JobStatus.COMPLETED or not isinstance(result.return_value, dict):
        return None
    value = result.return_value.get(metric)
    return float(value) if value is not None and math.isfinite(float(value)) else None
