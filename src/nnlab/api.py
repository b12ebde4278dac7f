"""nnlab from Python, for notebooks and scripts: the same runs as the command line.

    from nnlab.api import train, load_run

    run = train(["experiment=rings", "model.hidden_nodes=3"])
    run.metrics["val/acc"], run.run_dir          # metrics.json's values, the run dir
    run.task.network                             # the trained network
    again = load_run(run.run_dir)                # a finished run, its best checkpoint

`train` runs exactly what `nnlab-train <overrides>` runs (Hydra composes the config and writes
the run dir with its .hydra/ files, train.log and everything else), in this process, and
returns the Run. Errors are raised, not printed: a bad value raises nnlab.errors.ConfigError.
Sweeps (`-m`) stay on the command line; in Python, loop over `train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.utils import run_job
from hydra.types import HydraContext, RunMode

from nnlab import layout
from nnlab.cli import COMPOSITION_ERRORS, composition_error
from nnlab.errors import ConfigError
from nnlab.overrides import command_line
from nnlab.run import Run
from nnlab.runtime import restored_process_state
from nnlab.train import CONFIG_DIR
from nnlab.train import train as train_config

__all__ = ["Run", "load_run", "train"]


def train(overrides: Sequence[str] = ()) -> Run:
    """Train as `nnlab-train *overrides` does, and return the Run: `.metrics`, `.run_dir`,
    `.task` (the trained LightningModule), `.datamodule`, `.trainer` and `.cfg`.

    Each call makes a new run dir. `ckpt_path=last` resumes, as on the command line. Torch's
    thread count and Python's logging are as they were when it returns.
    """
    from nnlab.internals import hydra_callbacks
    from nnlab.resume import resume_arguments

    overrides = list(overrides)
    if command_line(overrides).flags:
        raise ConfigError("overrides", overrides, "flags (-m, --cfg ...) are the command line's")
    arguments = resume_arguments(overrides, CONFIG_DIR)
    with (
        restored_process_state(),
        initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"),
    ):
        loader = GlobalHydra.instance().config_loader()
        try:
            cfg = loader.load_configuration("train", arguments, RunMode.RUN)
        except COMPOSITION_ERRORS as error:
            raise composition_error(CONFIG_DIR, arguments, error) from None
        callbacks = hydra_callbacks(cfg)
        callbacks.on_run_start(config=cfg, config_name="train")
        job = run_job(
            hydra_context=HydraContext(config_loader=loader, callbacks=callbacks),
            task_function=train_config,
            config=cfg,
            job_dir_key="hydra.run.dir",
            job_subdir_key=None,
        )
        callbacks.on_run_end(config=cfg, config_name="train", job_return=job)
        return job.return_value  # raises what the run raised


def load_run(run_dir: str | Path, ckpt: str = "best") -> Run:
    """A finished (or interrupted) run, rebuilt from its saved config with the weights of its
    `ckpt` checkpoint ("best", "last" or a file), the task in eval mode and the data set up
    for testing. Reading the checkpoint runs no code from it (weights-only)."""
    from nnlab.checkpoints import load_weights
    from nnlab.eval import load_config, locate_checkpoint
    from nnlab.instantiate import instantiate
    from nnlab.runtime import restore_nvml_check

    run_dir = Path(run_dir)
    cfg = load_config(run_dir, [], run_dir)
    restore_nvml_check()
    task = instantiate(cfg, "task")
    load_weights(task, locate_checkpoint(run_dir, ckpt), "ckpt")
    task.eval()
    datamodule = instantiate(cfg, "data")
    datamodule.prepare_data()
    datamodule.setup("test")
    metrics = layout.read_metrics(run_dir)
    metrics.pop("status", None)
    return Run(cfg, run_dir, datamodule, task, None, metrics)
