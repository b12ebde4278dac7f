"""Building a run from its config: data, network, optimizer, task, loggers, callbacks, trainer."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nnlab.callbacks import GracefulStop
from nnlab.config import build, check_float, check_int
from nnlab.errors import NO_VALUE, ConfigError
from nnlab.preflight import check_writable
from nnlab.runtime import configure_threads, in_joblib_sweep, is_multirun, quiet_console
from nnlab.tasks.base import Task

log = logging.getLogger("nnlab")


@dataclass
class Run:
    """Everything a run trains and evaluates, built from its config."""

    cfg: DictConfig
    datamodule: L.LightningDataModule
    task: Task
    trainer: L.Trainer

    @property
    def dir(self) -> Path:
        return Path(self.cfg.paths.output_dir)


def build_run(cfg: DictConfig) -> Run:
    """Build everything from the config, checking every value on the way.

    Constructors only store and check their arguments (the data are made in `setup`), so a bad
    value anywhere stops the run here, before any work.
    """
    if is_multirun():
        quiet_console()
    _check_top_level_keys(cfg)
    threads = configure_threads(cfg.get("threads"))
    if cfg.get("seed") is not None:
        L.seed_everything(check_int("seed", cfg.seed, minimum=0), workers=True, verbose=False)
    datamodule = _build("data", cfg.data)
    network = _build("model", cfg.model)
    _check_shapes(datamodule, network)
    optimizer = _build("optimizer", cfg.optimizer)
    _check_optimizer(cfg.optimizer, optimizer, network)
    task = _build("task", cfg.task, network=network, optimizer=optimizer)
    for name, node in (cfg.logger or {}).items():
        if node.get("save_dir"):
            check_writable(f"logger.{name}.save_dir", str(node.save_dir))
    loggers = [_build(f"logger.{name}", node) for name, node in (cfg.logger or {}).items()]
    callbacks = [_build(f"callbacks.{name}", node) for name, node in (cfg.callbacks or {}).items()]
    callbacks.append(GracefulStop(_checkpoint_dir(callbacks, cfg) / "last.ckpt"))
    _check_trainer(cfg.trainer)
    # Without a ModelCheckpoint among the callbacks, Lightning would add its own.
    settings = {"enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in callbacks)}
    if is_multirun():  # parallel jobs share one terminal: no progress bars or summary tables
        settings |= {"enable_progress_bar": False, "enable_model_summary": False}
    trainer_cfg = OmegaConf.create(
        {**OmegaConf.to_container(cfg.trainer, resolve=True), **settings}
    )
    trainer = _build("trainer", trainer_cfg, logger=loggers or False, callbacks=callbacks)
    device = trainer.accelerator.__class__.__name__
    log.info("Running %s on %s with %d torch thread(s)", cfg.task_name, device, threads)
    return Run(cfg, datamodule, task, trainer)


def _build(path: str, node: DictConfig, **extra: Any) -> Any:
    log.info("Instantiating %s <%s>", path, node.get("_target_"))
    return build(node, path, **extra)


def _checkpoint_dir(callbacks: list[Any], cfg: DictConfig) -> Path:
    """Where last.ckpt goes: beside ModelCheckpoint's files, or checkpoints/ in the run dir."""
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath)
    return Path(cfg.paths.output_dir) / "checkpoints"


# The top-level keys of conf/train.yaml: anything else is a typo (+seeds=0,1,2 would sweep nothing).
TOP_LEVEL_KEYS = (
    "task_name", "seed", "threads", "ckpt_path",
    "paths", "data", "model", "task", "optimizer", "trainer", "logger", "callbacks",
)  # fmt: skip

# Trainer counts that Lightning checks with bare asserts, and their smallest allowed values.
TRAINER_INTEGERS = {
    "max_epochs": -1,
    "min_epochs": 0,
    "min_steps": -1,
    "check_val_every_n_epoch": 1,
    "log_every_n_steps": 0,
    "num_sanity_val_steps": -1,
}

# Trainer options that manual optimization (see tasks/base.py) cannot honour: their harmless
# values, and what to use instead.
MANUAL_OPTIMIZATION_INSTEAD = {
    "gradient_clip_val": ((None, 0), "task.gradient_clip_val"),
    "gradient_clip_algorithm": ((None, "norm"), "task.gradient_clip_val (clipping by norm)"),
    "accumulate_grad_batches": ((1,), "a larger data.batch_size"),
}


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
    """The budget is in optimizer steps (-1, no limit, only with an epoch limit); options that
    manual optimization or a missing GPU cannot honour are refused with what to use instead."""
    for key, minimum in TRAINER_INTEGERS.items():
        if trainer_cfg.get(key) is not None:
            check_int(f"trainer.{key}", trainer_cfg[key], minimum=minimum)
    max_steps = trainer_cfg.get("max_steps", -1)
    if trainer_cfg.get("max_epochs") in (None, -1) and not trainer_cfg.get("fast_dev_run"):
        check_int("trainer.max_steps", max_steps, minimum=1)
    else:
        check_int("trainer.max_steps", max_steps, minimum=-1)
    for key, (harmless, instead) in MANUAL_OPTIMIZATION_INSTEAD.items():
        if trainer_cfg.get(key, harmless[0]) not in harmless:
            raise ConfigError(
                f"trainer.{key}",
                trainer_cfg[key],
                f"nnlab's tasks step their own optimizers; use {instead}",
            )
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


# Optimizer arguments checked by name, so the message names the key rather than the class.
OPTIMIZER_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "lr": lambda key, value: check_float(key, value, above=0),
    "weight_decay": lambda key, value: check_float(key, value, minimum=0),
    "momentum": lambda key, value: check_float(key, value, minimum=0),
    "eps": lambda key, value: check_float(key, value, above=0),
}


def _check_optimizer(
    node: DictConfig, make_optimizer: Callable[..., Any], network: nn.Module
) -> None:
    """Check the optimizer's values now, and build it once so that torch checks the rest."""
    for key, check in OPTIMIZER_CHECKS.items():
        if key in node:
            check(f"optimizer.{key}", node[key])
    optimizer_class = getattr(make_optimizer, "func", make_optimizer)
    step = inspect.signature(optimizer_class.step).parameters.get("closure")
    if step is not None and step.default is inspect.Parameter.empty:
        raise ConfigError(
            "optimizer._target_",
            node._target_,
            "needs a closure at each step (as LBFGS does), which nnlab's tasks do not pass",
        )
    try:
        make_optimizer(network.parameters())
    except Exception as error:  # torch raises ValueError, TypeError, IndexError ... for bad values
        raise ConfigError(
            "optimizer", NO_VALUE, f"{node._target_} refused its arguments: {error}"
        ) from None


def check_checkpoint(path: Any, key: str = "ckpt_path") -> str:
    """`path` must name a checkpoint file that torch can read."""
    if not isinstance(path, str) or not Path(path).is_file():
        raise ConfigError(key, path, "no such checkpoint file")
    try:
        torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # a truncated or foreign file: torch's message says which
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(key, path, f"not a readable checkpoint ({reason})") from None
    return path
