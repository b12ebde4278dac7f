"""`-m`'s sweeper (hydra/sweeper=nnlab_grid): every combination of the swept values, as
Hydra's basic sweeper makes them, launched by Hydra's launcher. What it adds: the sweep stops
whole on a signal and ends with one line saying how its jobs ended (nnlab.sweep.signals), each
job's dir is named after what varies between the jobs, and parallel jobs share the cores.

Not Hydra's BasicSweeper itself: it raises the first failed job's error once its batch is
done, where a sweep of nnlab's reports every job.
"""

from __future__ import annotations

import io
import itertools
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, read_write

from nnlab.checks import NO_VALUE
from nnlab.errors import DISK_FULL, ConfigError, stop
from nnlab.overrides import as_value, key_of
from nnlab.run import layout
from nnlab.sweep import signals
from nnlab.sweep.devices import DEVICES, sweep_devices


class GridSweeper(Sweeper):
    hydra_context: HydraContext
    config: DictConfig
    launcher: Launcher

    def __init__(
        self, params: dict[str, str] | None = None, devices: list[Any] | None = None
    ) -> None:  # devices: read from the config (nnlab.sweep.devices)
        self.params = dict(params or {})

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        resumed = None
        if self.config.get("ckpt_path"):  # the jobs find their own dirs' runs (train.py)
            try:
                resumed = resumed_sweep(self.config, arguments)
            except ConfigError as error:
                stop(error)
            arguments = [a for a in arguments if key_of(a) != "ckpt_path"]
            log_dir = Path(os.path.abspath(os.path.expanduser(str(self.config.paths.log_dir))))
            if not Path(os.path.abspath(resumed)).is_relative_to(log_dir):
                reason = f"a sweep's dir lies inside paths.log_dir ({self.config.paths.log_dir})"
                stop(ConfigError("ckpt_path", str(self.config.ckpt_path), reason))
            # A worker whose first job was a kept one measures its memory before importing
            # torch, takes the import for a leak, and is replaced, which joblib's loky warns of.
            warnings.filterwarnings("ignore", message="A worker stopped while some jobs")
        refuse_ddp_without_slurm(self.config)
        workers = signals.local_workers(self.config)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides(
            [*(f"{k}={v}" for k, v in self.params.items()), *arguments]
        )
        jobs = grid(overrides)
        if resumed is not None:
            resumed_jobs(jobs, resumed)
        sweep_dir = start_sweep(self.config, overrides, min(workers, len(jobs)), resumed)
        statuses: list[str] = []
        with signals.signals_stop_the_sweep(sweep_dir, forward_to_workers=workers > 0) as watch:
            if watch.signum is None and signals.stopped_by(sweep_dir) is None:
                self.validate_batch_is_legal(jobs)
                try:
                    with one_line_if_refused(self.config.hydra.launcher):
                        results = self.launcher.launch(jobs, initial_job_idx=0)
                    statuses = [job_status(result.hydra_cfg) for result in results]
                except Exception as error:
                    refused = refused_by_the_cluster(error, self.config.hydra.launcher)
                    if refused is not None:
                        stop(refused)
                    if ended_without_a_result(error):
                        wait_for_slurm_jobs(sweep_dir)
                        statuses = statuses_on_disk(sweep_dir, len(jobs), NO_RESULT, NO_RESULT)
                    elif isinstance(error, OSError) and error.errno in DISK_FULL:
                        # Hydra writes a job's .hydra/ files before the job runs: there, a full
                        # disk stops the launcher (joblib's stops its workers), not the one job.
                        statuses = statuses_on_disk(sweep_dir, len(jobs), DISK_FULL_BEFORE)
                    else:
                        raise
        statuses += ["not run"] * (len(jobs) - len(statuses))
        signals.finish(sweep_dir, statuses, watch.signum)


def refuse_ddp_without_slurm(config: DictConfig) -> None:
    """Several devices for every job, launched here: each job would be refused as it starts
    (nnlab.train.build_run), after the workers' seconds of imports; refused before instead."""
    from nnlab.train import DDP_IN_A_SWEEP

    devices = (config.get("trainer") or {}).get("devices")
    slurm = "SlurmLauncher" in str(config.hydra.launcher.get("_target_", ""))
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 1 and not slurm:
        stop(ConfigError("trainer.devices", devices, DDP_IN_A_SWEEP))


STARTED: list[Path] = []  # the sweep dirs this process started, for nnlab.api.sweep


RESUMED = "NNLAB_RESUMED_SWEEP"  # set for a resumed sweep's jobs: they keep or resume their dirs


def resumed_sweep(config: DictConfig, arguments: list[str]) -> Path:
    """The sweep `-m ... ckpt_path=` resumes: its dir, or `last`, the newest sweep of the task
    started with this command's overrides, in the same order (launcher settings aside): only
    then are its jobs numbered and named as before, each finding its own dir."""
    value = str(config.ckpt_path)
    multiruns = layout.task_dir(str(config.paths.log_dir), config.get("task_name")) / "multiruns"
    typed = _compared(arguments)
    if value == "last":
        sweeps = sorted(multiruns.glob(f"*/{layout.MULTIRUN_FILE}"), key=layout.modified)
        if not sweeps:
            raise ConfigError("ckpt_path", value, f"no sweep to resume under {multiruns}")
        same = [p.parent for p in sweeps if _started_with(p.parent) == typed]
        found = same[-1] if same else sweeps[-1].parent
    else:
        found = Path(value).expanduser().absolute()
    started_with = _started_with(found)
    if started_with is None:
        reason = f"{found} is not a sweep's dir (no readable {layout.MULTIRUN_FILE})"
        raise ConfigError("ckpt_path", value, reason)
    layout.check_no_links(found, "ckpt_path", value)
    for job in found.iterdir():  # each job dir that the resume writes into again
        if job.is_dir() and job.name[:1].isdigit():
            layout.check_no_links(job, "ckpt_path", value)
    if started_with != typed:
        reason = f"that sweep was started with `{' '.join(started_with)}`: resume it with those"
        raise ConfigError("ckpt_path", value, reason)
    return found


def _compared(overrides: list[Any]) -> list[str]:
    """A sweep's overrides as a resume compares them: in order (the order numbers the jobs),
    without Hydra's settings (a launcher may change) and ckpt_path."""
    return [o for o in map(str, overrides) if not key_of(o).startswith(("hydra", "ckpt_path"))]


def _started_with(sweep_dir: Path) -> list[str] | None:
    overrides = layout.read_yaml(sweep_dir / layout.MULTIRUN_FILE, "hydra", "overrides", "task")
    return _compared(overrides) if isinstance(overrides, list) else None


def resumed_jobs(jobs: list[list[str]], sweep_dir: Path) -> None:
    """The jobs of a resumed sweep whose dirs exist save this command's Hydra files in
    .hydra/resumed/<stamp>, as a single run's resume does: their own .hydra/ is kept for the
    resume's checks and as their record."""
    subdir = f"{layout.HYDRA_DIR}/resumed/{layout.run_stamp()}"
    for number, job in enumerate(jobs):
        if any(path.is_dir() for path in sweep_dir.glob(f"{number}_*")):
            job.append(f"hydra.output_subdir={subdir}")


ASKED = ("partition", "nodes", "tasks_per_node", "cpus_per_task", "mem_gb", "gpus_per_node")


@contextmanager
def one_line_if_refused(launcher: DictConfig) -> Iterator[None]:
    """submitit prints sbatch's refusal before raising it, which nnlab's one line repeats: what
    submitit's launcher prints to sys.stderr (its jobs run elsewhere; Hydra's and submitit's
    log lines go to their handlers' streams, as before) is held, and passed on unless sbatch
    refused."""
    if "submitit" not in str(launcher.get("_target_", "")):
        yield
        return
    import submitit  # noqa: F401  its logger takes the real sys.stderr, not the held one

    held, refused = io.StringIO(), False
    try:
        with redirect_stderr(held):
            yield
    except Exception as error:
        refused = refused_by_the_cluster(error, OmegaConf.create()) is not None
        raise
    finally:
        if not refused:
            sys.stderr.write(held.getvalue())


def refused_by_the_cluster(error: Exception, launcher: DictConfig) -> ConfigError | None:
    """sbatch's refusal of a sweep's jobs, as one line with what they asked for; None for any
    other error (submitit raises the same class for a job that failed inside). (Clusters, and
    scripts/local_slurm.sh, set EnforcePartLimits=ALL, so that a job asking for more CPUs or
    memory than any node has is refused when submitted: it waited in the queue for ever.)"""
    submitit_errors = sys.modules.get("submitit.core.utils")  # loaded if submitit submitted
    if submitit_errors is None or not isinstance(error, submitit_errors.FailedJobError):
        return None
    command = getattr(error.__cause__, "cmd", None) or [""]
    if not str(command[0]).endswith("sbatch"):
        return None
    said = [line.strip().removeprefix("sbatch: error: ") for line in str(error).splitlines()]
    asked = " ".join(f"{k}={launcher[k]}" for k in ASKED if launcher.get(k) is not None)
    reason = f"SLURM refused the jobs ({'; '.join(filter(None, said))}); they asked for {asked}"
    return ConfigError("hydra.launcher", NO_VALUE, reason)


def ended_without_a_result(error: Exception) -> bool:
    """Whether submitit's launcher stopped because a SLURM job ended without a result (killed
    by the node or for memory, cancelled while pending, or not requeueable): the sweep reads
    how each job ended from its dir instead."""
    submitit_errors = sys.modules.get("submitit.core.utils")
    return submitit_errors is not None and isinstance(error, submitit_errors.UncompletedJobError)


NO_RESULT = "failed: its SLURM job ended without a result (sacct tells why)"


def grid(overrides: list[Any]) -> list[list[str]]:
    """Every combination of the swept values (a later override of a key replaces an earlier
    one), each as a job's overrides: Hydra's own sweep syntax (`1,2`, `range`, `glob` over
    config groups), read with Hydra's parser."""
    values: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                reason = "a grid takes lists of values; an interval is for hparams_search"
                stop(ConfigError(key, override.get_value_element_as_str(), reason))
            values[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            values[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*values.values())]


def start_sweep(
    config: DictConfig, overrides: list[Any], jobs_at_once: int, resumed: Path | None = None
) -> Path:
    """Make the sweep dir and its multirun.yaml (or take the dir of the sweep it `resumes`);
    set what every job of the sweep inherits: dir names without the keys they all share, and
    their share of the cores (JOBS_AT_ONCE)."""
    from nnlab.train import JOBS_AT_ONCE

    if resumed is not None:  # the launcher reads this config; each job composes the override
        with read_write(config.hydra):
            config.hydra.sweep.dir = str(resumed)
        with read_write(config.hydra.overrides):
            config.hydra.overrides.hydra.append(f"hydra.sweep.dir={as_value(str(resumed))}")
            config.hydra.overrides.hydra.append(f"+hydra.job.env_set.{RESUMED}=1")
        (resumed / layout.SWEEP_STOPPED).unlink(missing_ok=True)  # it stops this one no more
    sweep_dir = Path(str(config.hydra.sweep.dir))
    STARTED.append(sweep_dir)
    log_dir = Path(os.path.abspath(os.path.expanduser(str(config.paths.log_dir))))
    inside = Path(os.path.abspath(os.path.expanduser(str(sweep_dir)))).is_relative_to(log_dir)
    if not inside:  # nothing written outside it (`..` counted, links inside it followed)
        reason = f"a sweep's dir lies inside paths.log_dir ({log_dir}): set that instead"
        stop(ConfigError("hydra.sweep.dir", str(config.hydra.sweep.dir), reason))
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = f"cannot write there ({error.strerror}: {error.filename})"
        stop(ConfigError("paths.log_dir", str(config.paths.log_dir), reason))
    if resumed is None:  # a resumed sweep's keeps the command it was started with
        OmegaConf.save(config, sweep_dir / layout.MULTIRUN_FILE)
    fixed = [o.get_key_element() for o in overrides if not o.is_sweep_override()]
    excluded = [*config.hydra.job.config.override_dirname.exclude_keys, *fixed]
    excluded.append("hydra.output_subdir")  # a resumed job's (resumed_jobs): not in its name
    # The launcher composes each job from the sweep's Hydra overrides plus the job's own, so
    # a Hydra override added here reaches every job.
    with read_write(config.hydra.overrides):
        config.hydra.overrides.hydra.append(
            f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]"
        )
        if jobs_at_once > 1:
            config.hydra.overrides.hydra.append(f"+hydra.job.env_set.{JOBS_AT_ONCE}={jobs_at_once}")
        devices = sweep_devices(config, jobs_at_once)
        if devices:  # a device per worker (nnlab.sweep.devices)
            listed = as_value(",".join(devices))
            config.hydra.overrides.hydra.append(f"+hydra.job.env_set.{DEVICES}={listed}")
        if jobs_at_once > 0:  # worker processes on this machine: they watch this process
            config.hydra.overrides.hydra.append(
                f"+hydra.job.env_set.{signals.SWEEP_PID}={os.getpid()}"
            )
        if not {"$", "\\"} & set(str(sweep_dir)):  # else Hydra would read them: its own dir
            stops = as_value(str(sweep_dir))
            config.hydra.overrides.hydra.append(f"+hydra.job.env_set.{signals.SWEEP_DIR}={stops}")
    return sweep_dir


DISK_FULL_BEFORE = "failed: disk full before the job wrote its metrics.json"


NOT_STARTED = "not run: the disk filled up before it started"


def statuses_on_disk(
    sweep_dir: Path, jobs: int, missing: str, not_started: str = NOT_STARTED
) -> list[str]:
    """Each job's status as its metrics.json in <sweep_dir>/<number>_... says, else `missing`
    (a job dir without one), else `not_started` (no job dir)."""
    statuses = []
    for number in range(jobs):
        dirs = list(sweep_dir.glob(f"{number}_*"))
        found = [layout.read_metrics(d).get("status") for d in dirs]
        statuses.append(str(next((s for s in found if s), missing if dirs else not_started)))
    return statuses


def wait_for_slurm_jobs(sweep_dir: Path) -> None:
    """Until none of the sweep's SLURM jobs (submitit's folders name them) is queued or
    running: submitit's launcher stopped waiting at the first job without a result."""
    import subprocess
    import time

    jobs = sorted({p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("*_*")})
    while jobs:
        queued = subprocess.run(
            ["squeue", "-h", "-o", "%i", "-j", ",".join(jobs)], capture_output=True, text=True
        )
        if queued.returncode != 0 or not queued.stdout.strip():
            return
        time.sleep(5)


def job_status(hydra_cfg: DictConfig) -> str:
    """How a job ended, as its metrics.json says (a job that wrote none did not end itself)."""
    status = layout.read_metrics(hydra_cfg.hydra.runtime.output_dir).get("status")
    return str(status or "failed: the job wrote no metrics.json")
