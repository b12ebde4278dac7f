"""Building a run from its config: data, task, loggers, callbacks and trainer, all by Hydra."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from nnlab import internals, layout, trackers
from nnlab.callbacks import GracefulStop, ResumedLoaderState, TrainingGuard
from nnlab.config_checks import check_config
from nnlab.errors import ConfigError
from nnlab.instantiate import instantiate
from nnlab.progress import progress_bar
from nnlab.runtime import (
    DETAILS,
    configure_threads,
    is_multirun,
    quiet_console,
    restore_nvml_check,
    route_lightning_logs,
)

log = logging.getLogger("nnlab")


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
    check_config(cfg)  # done already by nnlab-train; here for a caller of build_run
    threads = configure_threads(cfg.get("threads"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg, "data")
    task = instantiate(cfg, "task")
    _check_shapes(datamodule, getattr(task, "network", None))
    trackers.prepare(cfg.get("logger"))
    loggers = [instantiate(cfg, f"logger.{name}") for name in cfg.get("logger") or {}]
    callbacks = [instantiate(cfg, f"callbacks.{name}") for name in cfg.get("callbacks") or {}]
    checkpoints = next(
        (Path(c.dirpath) for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath),
        Path(cfg.paths.output_dir) / layout.CHECKPOINTS,
    )
    # The guard first: it checks the losses before GracefulStop saves on a signal.
    callbacks += [TrainingGuard(), GracefulStop(checkpoints / "last.ckpt"), ResumedLoaderState()]
    trainer_cfg = cfg.trainer
    _check_accelerator(trainer_cfg)
    # Without a ModelCheckpoint among the callbacks, Lightning would add its own.
    settings = {"enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in callbacks)}
    if is_multirun():  # parallel jobs share one terminal: no progress bars or summary tables
        settings |= {"enable_progress_bar": False, "enable_model_summary": False}
    if settings.get("enable_progress_bar", trainer_cfg.get("enable_progress_bar", True)):
        callbacks.append(progress_bar(OmegaConf.to_container(trainer_cfg, resolve=True)))
    trainer = instantiate(cfg, "trainer", logger=loggers or False, callbacks=callbacks, **settings)
    internals.skip_unused_batch_hooks(trainer)
    run = Run(cfg, Path(cfg.paths.output_dir), datamodule, task, trainer)
    _describe(run, threads)
    return run


def _describe(run: Run, threads: int) -> None:
    """The run's key settings, on the console and in train.log: what the command changed,
    what was built, the budget and where it runs. The model summary goes to train.log."""
    from lightning.pytorch.utilities.model_summary import ModelSummary

    cfg, task, trainer = run.cfg, run.task, run.trainer
    changed = " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""
    log.info("%s: %s", cfg.task_name, changed or "the defaults")
    network = getattr(task, "network", None)
    built = [type(task).__name__]
    if isinstance(network, torch.nn.Module):
        built.append(f"{type(network).__name__} network of {_parameters(network)} parameters")
    built.append(type(run.datamodule).__name__)
    optimizer = cfg.get("optimizer") or {}
    if optimizer.get("_target_"):
        lr = f" (lr {optimizer.lr:g})" if isinstance(optimizer.get("lr"), int | float) else ""
        built.append(f"{optimizer._target_.rpartition('.')[2]}{lr}")
    log.info("  %s", ", ".join(built))
    device = type(trainer.accelerator).__name__.removesuffix("Accelerator")
    devices = f"{trainer.num_devices} {device}s" if trainer.num_devices > 1 else device
    log.info("  %s on %s with %d torch thread(s)", _budget(cfg.trainer), devices, threads)
    logging.getLogger(DETAILS).info("Model summary:\n%s", ModelSummary(task, max_depth=2))


def _parameters(network: torch.nn.Module) -> str:
    """The parameter count, `?` while a lazy layer has not seen data."""
    parameters = list(network.parameters())
    if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in parameters):
        return "?"
    return f"{sum(p.numel() for p in parameters):,}"


def _budget(trainer_cfg: DictConfig) -> str:
    if trainer_cfg.get("fast_dev_run"):
        return "fast_dev_run"
    if (trainer_cfg.get("max_steps") or -1) > 0:
        return f"{trainer_cfg.max_steps:,} optimizer steps"
    return f"{trainer_cfg.get('max_epochs')} epochs"


def training_guard(trainer: L.Trainer) -> TrainingGuard:
    return next(c for c in trainer.callbacks if isinstance(c, TrainingGuard))


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


def _check_accelerator(trainer_cfg: DictConfig) -> None:
    """A GPU that is not there (asking torch, so after the imports)."""
    accelerator = trainer_cfg.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        missing = "torch sees no CUDA GPU on this machine"
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        missing = "torch sees no Apple MPS device on this machine"
    else:
        _check_cpu_processes(trainer_cfg)
        return
    raise ConfigError(
        "trainer.accelerator",
        accelerator,
        f"{missing}; use trainer=cpu, or trainer=auto to take a GPU when there is one",
    )


def _check_cpu_processes(trainer_cfg: DictConfig) -> None:
    """DDP on the CPU starts one process per device: more than the machine has cores would
    start thousands of processes for a mistyped number (a GPU count Lightning checks itself)."""
    devices, cores = trainer_cfg.get("devices", 1), os.cpu_count() or 1
    on_cpu = trainer_cfg.get("accelerator") == "cpu" or not torch.cuda.is_available()
    if on_cpu and isinstance(devices, int) and devices > cores:
        raise ConfigError(
            "trainer.devices",
            devices,
            f"DDP on the CPU runs a process per device, and this machine has {cores} cores",
        )
