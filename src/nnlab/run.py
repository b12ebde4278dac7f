"""Building a run from its config: data, task, loggers, callbacks and trainer, all by Hydra."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from nnlab import layout
from nnlab.callbacks import GracefulStop, TrainingGuard
from nnlab.checks import BadValue, check_int, check_writable
from nnlab.errors import ConfigError
from nnlab.instantiate import instantiate
from nnlab.progress import progress_bar
from nnlab.runtime import (
    configure_threads,
    in_joblib_sweep,
    is_multirun,
    quiet_console,
    restore_nvml_check,
    route_lightning_logs,
)

log = logging.getLogger("nnlab")

# The top-level keys of conf/train.yaml: anything else is a typo (+seeds=0,1,2 would sweep nothing).
TOP_LEVEL_KEYS = (
    "task_name", "seed", "threads", "ckpt_path", "init_from",
    "paths", "data", "model", "task", "optimizer", "trainer", "logger", "callbacks",
)  # fmt: skip

MAX_SEED = 2**32 - 1

# Trainer counts that Lightning checks with bare asserts, and their smallest allowed values.
TRAINER_INTEGERS = {
    "max_epochs": -1,
    "min_epochs": 0,
    "min_steps": -1,
    "check_val_every_n_epoch": 1,
    "log_every_n_steps": 0,
    "num_sanity_val_steps": -1,
    "accumulate_grad_batches": 1,
}


@dataclass
class Run:
    """A run: its config, data module, trained task and trainer, and its final metrics.

    `nnlab.api.train` returns one after training, `nnlab.api.load_run` for a finished run.
    """

    cfg: DictConfig
    run_dir: Path
    datamodule: L.LightningDataModule
    task: L.LightningModule
    trainer: L.Trainer | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def build_run(cfg: DictConfig) -> Run:
    """Build everything the config describes, checking every value on the way.

    Constructors only store and check their arguments (the data are made in `setup`), so a bad
    value anywhere stops the run here, before any work.
    """
    restore_nvml_check()
    route_lightning_logs()
    if is_multirun():
        quiet_console()
    _check_top_level_keys(cfg)
    threads = cfg.get("threads")
    threads = configure_threads(
        None if threads is None else checked(check_int, "threads", threads, minimum=1)
    )
    if cfg.get("seed") is not None:
        seed = checked(check_int, "seed", cfg.seed, minimum=0)
        if seed > MAX_SEED:  # numpy's limit, which Lightning's seed_everything enforces late
            raise ConfigError("seed", seed, f"expected an integer <= {MAX_SEED}")
        L.seed_everything(seed, workers=True, verbose=False)
    datamodule = instantiate(cfg, "data")
    task = instantiate(cfg, "task")
    _check_shapes(datamodule, getattr(task, "network", None))
    for name, node in (cfg.get("logger") or {}).items():
        if node.get("save_dir"):  # a logger writes there only at its first value: check now
            checked(check_writable, f"logger.{name}.save_dir", str(node.save_dir))
    loggers = [instantiate(cfg, f"logger.{name}") for name in cfg.get("logger") or {}]
    callbacks = [instantiate(cfg, f"callbacks.{name}") for name in cfg.get("callbacks") or {}]
    checkpoints = next(
        (Path(c.dirpath) for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath),
        Path(cfg.paths.output_dir) / layout.CHECKPOINTS,
    )
    # The guard first: it checks the losses before GracefulStop saves on a signal.
    callbacks += [TrainingGuard(), GracefulStop(checkpoints / "last.ckpt")]
    trainer_cfg = cfg.trainer
    _check_trainer(trainer_cfg)
    # Without a ModelCheckpoint among the callbacks, Lightning would add its own.
    settings = {"enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in callbacks)}
    if is_multirun():  # parallel jobs share one terminal: no progress bars or summary tables
        settings |= {"enable_progress_bar": False, "enable_model_summary": False}
    if settings.get("enable_progress_bar", trainer_cfg.get("enable_progress_bar", True)):
        callbacks.append(progress_bar(OmegaConf.to_container(trainer_cfg, resolve=True)))
    trainer = instantiate(cfg, "trainer", logger=loggers or False, callbacks=callbacks, **settings)
    device = trainer.accelerator.__class__.__name__
    log.info("Running %s on %s with %d torch thread(s)", cfg.task_name, device, threads)
    return Run(cfg, Path(cfg.paths.output_dir), datamodule, task, trainer)


def training_guard(trainer: L.Trainer) -> TrainingGuard:
    return next(c for c in trainer.callbacks if isinstance(c, TrainingGuard))


def _check_top_level_keys(cfg: DictConfig) -> None:
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            allowed = ", ".join(TOP_LEVEL_KEYS)
            raise ConfigError(
                str(key), cfg[key], f"unknown top-level key; the config has: {allowed}"
            )


def _check_shapes(datamodule: Any, network: Any) -> None:
    """The data's inputs must fit the network's first layer (data=wave with an MLP for rings
    would otherwise fail at the first step, with a matrix-shape error)."""
    data_features = getattr(datamodule, "input_features", None)
    model_features = getattr(network, "in_features", None)
    if data_features is not None and model_features not in (None, data_features):
        raise ConfigError(
            "model.in_features",
            model_features,
            f"the data have {data_features} input features; pick an experiment= that matches them",
        )


def _check_trainer(trainer_cfg: DictConfig) -> None:
    """Counts that Lightning checks with bare asserts; a budget (-1 steps, no limit, only with
    an epoch limit); DDP inside a joblib sweep; a GPU that is not there."""
    import torch

    for key, minimum in TRAINER_INTEGERS.items():
        if trainer_cfg.get(key) is not None:
            checked(check_int, f"trainer.{key}", trainer_cfg[key], minimum=minimum)
    max_steps = trainer_cfg.get("max_steps", -1)
    if trainer_cfg.get("max_epochs") in (None, -1) and not trainer_cfg.get("fast_dev_run"):
        checked(check_int, "trainer.max_steps", max_steps, minimum=1)
    else:
        checked(check_int, "trainer.max_steps", max_steps, minimum=-1)
    interval = trainer_cfg.get("val_check_interval")
    if isinstance(interval, float):  # a share of the epoch; an int counts batches
        if not 0 < interval <= 1:
            raise ConfigError("trainer.val_check_interval", interval, "expected a share in (0, 1]")
    elif interval is not None:
        checked(check_int, "trainer.val_check_interval", interval, minimum=1)
    devices = trainer_cfg.get("devices", 1)
    if devices not in (1, "1", "auto") and in_joblib_sweep():
        raise ConfigError(
            "trainer.devices",
            devices,
            "DDP starts its own processes, which a joblib sweep's workers cannot; sweep with "
            "hydra/launcher=slurm (or basic) instead",
        )
    if trainer_cfg.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            trainer_cfg.accelerator,
            "torch sees no CUDA GPU on this machine; use trainer=cpu, or trainer=auto "
            "to take a GPU when there is one",
        )


def checked(check: Callable[..., Any], key: str, *args: Any, **kwargs: Any) -> Any:
    """A nnlab.checks function on a key outside any instantiated node: BadValue as ConfigError."""
    try:
        return check(key, *args, **kwargs)
    except BadValue as error:
        raise ConfigError.from_bad_value(error) from None
