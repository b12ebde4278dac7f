"""nnlab from Python, for notebooks and scripts: the same runs as the command line.

    from nnlab.api import train, load_run

    run = train(["experiment=rings", "model.hidden_nodes=3"])
    run.metrics["val/acc"], run.run_dir          # metrics.json (with its status), the run dir
    run.task.network                             # the trained network
    again = load_run(run.run_dir)                # a finished run, its best checkpoint

`train` runs what `nnlab-train <overrides>` runs, in this process: Hydra composes the config
(once) and runs the job with its own `run_job`, which writes the run dir, its .hydra/ files
and train.log. Errors are raised, not printed: a bad value raises nnlab.errors.ConfigError.
`sweep` runs what `nnlab-train -m <overrides>` runs and returns its jobs as rows; DDP that
starts its own processes stays on the command line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import run_job
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig

from nnlab import compat
from nnlab.errors import ConfigError, raised_as_known
from nnlab.run import layout
from nnlab.run.config import refuse_before_compose
from nnlab.train import CONFIG_DIR, Run
from nnlab.train import train as train_config

__all__ = ["Run", "compose_config", "load_run", "sweep", "train"]


def train(overrides: Sequence[str] = ()) -> Run:
    """Train as `nnlab-train *overrides` does, and return the Run: `.metrics`, `.run_dir`,
    `.task` (the trained LightningModule), `.datamodule`, `.trainer` and `.cfg`.

    Each call makes a new run dir; `ckpt_path=last` resumes, as on the command line. Torch's
    thread count and Python's logging are as they were when it returns.
    """
    overrides = [str(override) for override in overrides]
    if any(override.startswith("-") for override in overrides):
        raise ConfigError("overrides", overrides, "flags (-m, --cfg ...) are the command line's")
    with (
        restored_process_state(),
        initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"),
        raised_as_known(),
    ):
        refuse_before_compose(overrides, CONFIG_DIR)
        cfg = compose("train", overrides, return_hydra_config=True)
        cfg.hydra.mode = RunMode.RUN
        callbacks = compat.hydra_callbacks(cfg)
        context = HydraContext(GlobalHydra.instance().config_loader(), callbacks)
        callbacks.on_run_start(config=cfg, config_name="train")
        job = run_job(train_config, cfg, "hydra.run.dir", None, hydra_context=context)
        callbacks.on_run_end(config=cfg, config_name="train", job_return=job)
        return job.return_value  # raises what the run raised


def sweep(overrides: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Run a sweep as `nnlab-train -m *overrides` does, from this process, through the
    config's launcher (joblib's worker processes by default; `hydra/launcher=basic` runs the
    jobs in this process), and return one row per job, as nnlab-report tabulates them: `dir`,
    `status`, the values that vary between the jobs, and the metrics. `pandas.DataFrame(rows)`
    makes it a table. A sweep whose jobs failed or were interrupted returns them with their
    status; a command that starts no sweep (a bad value) raises nnlab.errors.BadInput after
    printing its one line, as the command does."""
    import sys

    from nnlab.analysis.report import read_runs, varying_keys
    from nnlab.errors import BadInput
    from nnlab.sweep.grid import STARTED
    from nnlab.train import main

    overrides = [str(override) for override in overrides]
    if any(override.startswith("-") for override in overrides):
        raise ConfigError("overrides", overrides, "flags (-m, --cfg ...) are the command line's")
    started, argv, code = len(STARTED), sys.argv, 0
    sys.argv = ["nnlab-train", "-m", *overrides]
    try:
        with restored_process_state():
            main()
    except SystemExit as exit:  # 1: a job failed; 4: a full disk; 128 + n: a signal
        code = exit.code if isinstance(exit.code, int) else 1
        if not isinstance(exit.code, int | None):
            print(exit.code, file=sys.stderr)  # as the interpreter prints it
    finally:
        sys.argv = argv
        GlobalHydra.instance().clear()
        # joblib keeps its workers for the next call, with this sweep's environment (its
        # devices, its sweep's process id): the next sweep starts its own.
        loky = sys.modules.get("joblib.externals.loky.reusable_executor")  # if joblib ran it
        if loky is not None:
            loky.get_reusable_executor().shutdown(wait=True)
        HydraConfig.instance().cfg = None  # Hydra's main leaves its last job's config set
    runs = read_runs(STARTED[-1]) if len(STARTED) > started else []
    if not runs:  # a bad value: its one line is printed above, as the command prints it
        raise BadInput(f"nnlab-train -m exited with {code} before any job ran")
    keys = varying_keys(runs)
    return [
        {"dir": run.path, "status": run.status, **{k: run.overrides.get(k) for k in keys}}
        | run.metrics
        for run in runs
    ]


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `nnlab-train *overrides` would run, composed by Hydra, to read (not to run:
    values that need Hydra's job, such as `paths.output_dir`, are not resolved)."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"), raised_as_known():
        return compose("train", list(overrides))


def load_run(run_dir: str | Path, ckpt: str = "best", overrides: Sequence[str] = ()) -> Run:
    """A finished (or interrupted) run, rebuilt with the weights of its `ckpt` checkpoint
    ("best", "last" or a file), the task in eval mode and the data set up for testing. Its
    config is composed again from its overrides (plus `overrides`: the `hydra.searchpath=`
    of a run of your own code, another test set): nothing a run dir names is run, and the
    checkpoint is read weights-only."""
    from nnlab.run.build import build
    from nnlab.run.eval import checkpoint_of, saved_config
    from nnlab.run.resume import allow_partials, load_weights

    run_dir = Path(run_dir)
    cfg = saved_config(run_dir, [str(o) for o in overrides], run_dir)
    task = build(cfg, "task")
    allow_partials(cfg)
    load_weights(task, checkpoint_of(run_dir, ckpt), "ckpt")
    task.eval()
    datamodule = build(cfg, "data")
    datamodule.prepare_data()
    datamodule.setup("test")
    return Run(cfg, run_dir, datamodule, task, None, layout.read_metrics(run_dir))


@contextmanager
def restored_process_state() -> Iterator[None]:
    """Give back what a run changes in the calling process: torch's threads (a run sets its
    own), the root logger's handlers (Hydra points them at the run's train.log), and the
    environment (Lightning's DDP sets LOCAL_RANK, WORLD_SIZE ..., which the next run would
    take for a cluster's)."""
    import torch

    threads, root, environment = torch.get_num_threads(), logging.getLogger(), dict(os.environ)
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environment)
        torch.set_num_threads(threads)
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
