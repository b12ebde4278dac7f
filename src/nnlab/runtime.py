"""Process-level settings of a run: its directory name, torch threads, and sweep detection."""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

import nnlab
from nnlab.checks import check_int
from nnlab.errors import DISK_FULL
from nnlab.overrides import parse, quoted
from nnlab.trackers import wandb_offline


def run_stamp() -> str:
    """`2026-11-29_14-03-07.042_a3f9c2`: a timestamp to the millisecond, so that runs list in
    the order they started (the report's rows too), plus a random suffix so that two runs
    started in the same millisecond never share a directory."""
    now = datetime.now()
    return f"{now:%Y-%m-%d_%H-%M-%S}.{now.microsecond // 1000:03d}_{secrets.token_hex(3)}"


def path_safe(text: str, max_length: int = 120) -> str:
    """`text` as one path component: no '/', and short enough for any file system."""
    text = text.replace("/", "|")
    return text if len(text) <= max_length else text[: max_length - 3] + "..."


def register_resolvers() -> None:
    # use_cache: Hydra copies the resolved value into every job of a sweep, as it does for `now`,
    # so all jobs agree on the sweep's directory even when they run in other processes.
    OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("path_safe", path_safe, replace=True)
    # The loggers' configs: a run's name (its dir's), tags as text, an absolute path, and
    # whether W&B runs offline (nnlab.trackers).
    OmegaConf.register_new_resolver("path_name", lambda path: Path(str(path)).name, replace=True)
    OmegaConf.register_new_resolver("join", lambda items: ",".join(map(str, items)), replace=True)
    OmegaConf.register_new_resolver(
        "abspath", lambda path: str(Path(str(path)).resolve()), replace=True
    )
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# Lines for train.log only: what was built, Lightning's own notices, the full model summary.
DETAILS = "nnlab.details"


class ConsoleLines(logging.Filter):
    """What the terminal shows of a run's log: nnlab's own lines and every warning.

    The rest (each object built, Lightning's "GPU available" and "`Trainer.fit` stopped"
    notices, the model summary) goes to train.log only. Hydra's job_logging config puts this
    filter on the console handler (conf/hydra/default.yaml).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        own = record.name == "nnlab" or record.name.startswith("nnlab.")
        return own and not record.name.startswith(DETAILS)


class HydraLines(logging.Filter):
    """Hydra's own console lines, less the joblib launcher's dump of its Parallel() settings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Joblib.Parallel(")


class LogFile(logging.FileHandler):
    """train.log's handler. With the disk full, a line that cannot be written is dropped: the
    run's own message says the disk is full, where logging would print a traceback per line."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return
        super().handleError(record)


class ConsoleFormat(logging.Formatter):
    """Console lines as plain text (train.log keeps timestamps and logger names); a warning
    or error says what it is."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def quiet_console() -> None:
    """Console logs at WARNING and above: a sweep's parallel jobs share one terminal.

    Each job's train.log keeps everything; the terminal gets warnings, errors and each job's
    one-line result (printed on stdout).
    """
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler or "colorlog" in type(handler).__module__:
            handler.setLevel(logging.WARNING)


def route_lightning_logs() -> None:
    """Send Lightning's log lines through the root logger only, as every other line goes.

    Importing `lightning` gives its logger a console handler of its own ("INFO: ..."), which
    printed each line twice beside Hydra's handlers and ignored a sweep's quiet console.
    """
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


def available_cores() -> int:
    """The cores this process may use (a SLURM or cgroup CPU set, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        return os.cpu_count() or 1


def in_joblib_sweep() -> bool:
    """Whether this job runs in a worker process of Hydra's joblib launcher."""
    return is_multirun() and "joblib" in str(HydraConfig.get().launcher.get("_target_", ""))


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once on this machine (1 outside parallel sweeps)."""
    if not in_joblib_sweep():
        return 1
    hydra_cfg = HydraConfig.get()
    n_jobs = int(hydra_cfg.launcher.get("n_jobs") or 1)
    cores = available_cores()
    # joblib's convention: -1 is every core, -2 all but one, ...
    limit = n_jobs if n_jobs > 0 else cores + 1 + n_jobs
    # An Optuna search launches `n_jobs` trials at a time; a grid, all its jobs at once.
    searching = hydra_cfg.sweeper.get("n_jobs")
    at_once = searching if searching else sweep_size(Path(hydra_cfg.sweep.dir))
    return max(1, min(cores, limit, at_once))


def sweep_size(sweep_dir: Path) -> int:
    """The number of jobs in the sweep: the product of the numbers of swept values."""
    try:
        overrides = list(OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task)
    except (OSError, AttributeError):  # no record of the sweep: assume it fills the machine
        return available_cores()
    size = 1
    for override in parse(overrides):
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
    return size


def configure_threads(threads: int | None) -> int:
    """Set torch's thread count: `threads`, or this job's share of the cores when it is None.

    Parallel jobs that each use every core fight over them; one job per core with one thread
    each is faster in total.
    """
    import torch

    if threads is None:
        threads = max(1, available_cores() // parallel_jobs())
    torch.set_num_threads(check_int("threads", threads, minimum=1))
    return threads


def restore_nvml_check() -> None:
    """Undo the PYTORCH_NVML_BASED_CUDA_CHECK=1 that importing Lightning sets.

    Lightning sets it so that torch.cuda.is_available() does not initialise CUDA before a fork.
    On a CUDA build of torch without a GPU, NVML then fails and is re-opened on every call, and
    Adam asks on every step: 0.42 -> 0.58 ms per step on the rings task. nnlab never forks after
    using CUDA (sweeps spawn fresh processes, DDP launches subprocesses), so it restores the
    user's own setting: a variable set when the process started is kept.
    """
    if not nnlab.USER_SET_NVML_CHECK:
        os.environ.pop(nnlab.NVML_CHECK, None)


# Warnings about what nnlab's own setup does on purpose, which a user cannot act on.
EXPECTED_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6 inside torch 2.14
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # nnlab
    # logs epoch values; a per-step interval only matters to modules that log per step
    r"Checkpoint directory .* exists and is not empty",  # resuming in place
    r"You requested to overfit but enabled train dataloader shuffling",  # debug=overfit
)


def silence_noise() -> None:
    """Drop messages that say nothing about the run: Lightning's advert for its cloud logger,
    the warnings nnlab's own setup causes (EXPECTED_WARNINGS), and threads' tracebacks for a
    full disk."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )
    for message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    threading.excepthook = _thread_errors_but_a_full_disk


def _thread_errors_but_a_full_disk(args: threading.ExceptHookArgs) -> None:
    """TensorBoard's writer thread dies when the disk fills up, with a traceback; the run
    says that the disk is full itself, in one line (nnlab.errors.DiskFull)."""
    if isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FULL:
        return
    threading.__excepthook__(args)


def prepare_ddp_children(trainer: Any, run_dir: Path) -> None:
    """Make the processes Lightning's DDP starts run this job, in this run dir.

    Lightning starts DDP's other ranks by running this process's command line again. Run as
    is, each would compose its own config and make its own run dir (a known failure of Hydra
    with DDP) and, in a sweep, start the whole sweep again. So the command line becomes this
    job's overrides, pinned to this run dir, writing no .hydra/ files (the ranks' log lines
    share train.log).
    """
    launches_ranks = trainer.world_size > 1 and not (
        trainer.strategy.cluster_environment.creates_processes_externally
    )
    if not launches_ranks or os.environ.get("LOCAL_RANK") is not None:
        return
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    sys.argv[1:] = [*overrides, f"hydra.run.dir={quoted(str(run_dir))}", "hydra.output_subdir=null"]


@contextmanager
def restored_process_state() -> Iterator[None]:
    """Give back what a run changes in the calling process: torch's threads (a run sets its
    own) and the root logger's handlers (Hydra points them at the run's train.log)."""
    import torch

    threads = torch.get_num_threads()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
