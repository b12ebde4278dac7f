"""`nnlab-train`: compose the config with Hydra, train, test, and write the run's results.

nnlab-train experiment=wave model.hidden_nodes=20
nnlab-train -m experiment=rings model.hidden_nodes=1,2,3 model.activation=sigmoid,relu
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nnlab import outputs
from nnlab.config import ConfigError, build, check_float, check_int
from nnlab.runtime import configure_threads, is_multirun, register_resolvers, silence_noise
from nnlab.tasks.base import Task

log = logging.getLogger("nnlab")
register_resolvers()
silence_noise()

# The repository's conf/. (Hydra resolves a relative config_path of a console script's module as
# a package resource, which the top-level conf/ is not, so main() hands Hydra the folder itself.)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class Run:
    """Everything a run trains and evaluates, built from its config."""

    cfg: DictConfig
    datamodule: L.LightningDataModule
    task: Task
    trainer: L.Trainer


def build_run(cfg: DictConfig) -> Run:
    """Build data, network, optimizer, task, loggers, callbacks and trainer from the config.

    Constructors only store and check their arguments (the data are made in `setup`), so a bad
    value anywhere stops the run here, before any work.
    """
    threads = configure_threads(cfg.get("threads"))
    if cfg.get("seed") is not None:
        L.seed_everything(check_int("seed", cfg.seed, minimum=0), workers=True, verbose=False)
    datamodule = _build("data", cfg.data)
    network = _build("model", cfg.model)
    optimizer = _build("optimizer", cfg.optimizer)
    _check_optimizer(cfg.optimizer, optimizer, network)
    task = _build("task", cfg.task, network=network, optimizer=optimizer)
    loggers = [_build(f"logger.{name}", node) for name, node in (cfg.logger or {}).items()]
    callbacks = [_build(f"callbacks.{name}", node) for name, node in (cfg.callbacks or {}).items()]
    _check_trainer(cfg.trainer)
    trainer_cfg = cfg.trainer
    if is_multirun():  # parallel jobs share one terminal: no progress bars or summary tables
        quiet = {"enable_progress_bar": False, "enable_model_summary": False}
        trainer_cfg = OmegaConf.merge(trainer_cfg, quiet)
    trainer = _build("trainer", trainer_cfg, logger=loggers or False, callbacks=callbacks)
    log.info(
        "Running %s on %s with %d torch thread(s)",
        cfg.task_name,
        trainer.accelerator.__class__.__name__,
        threads,
    )
    return Run(cfg, datamodule, task, trainer)


def train(cfg: DictConfig) -> dict[str, float]:
    """The one path every task takes: build, fit, validate the final weights, test, write results.

    metrics.json is written however the run ends, with `status` saying how.
    """
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; the compose API does not
    started = time.perf_counter()
    metrics: dict[str, float] = {}
    status = "failed"
    try:
        run = build_run(cfg)
        trainer, task, datamodule = run.trainer, run.task, run.datamodule
        if trainer.is_global_zero:
            outputs.log_hparams(trainer.loggers, cfg, task.metric_names)

        trainer.fit(task, datamodule=datamodule)
        metrics.update(_final(trainer, task))
        if trainer.limit_val_batches and task.last_validated_step != trainer.global_step:
            trainer.validate(
                task, datamodule=datamodule, verbose=False
            )  # val/* of the final weights
            metrics.update(_final(trainer, task))
        trainer.test(task, datamodule=datamodule, verbose=False)
        metrics.update(_final(trainer, task))

        if trainer.is_global_zero:
            outputs.save_figures(
                task.figures(datamodule), run_dir, trainer.loggers, trainer.global_step
            )
        status = "completed"
        return metrics
    except ConfigError as error:
        status = f"failed: {error}"
        raise
    except (KeyboardInterrupt, SystemExit):
        status = "interrupted"
        raise
    except Exception as error:
        status = f"failed: {type(error).__name__}: {error}".splitlines()[0]
        raise
    finally:
        outputs.write_metrics(run_dir, metrics, status)
        if status == "completed":
            seconds = time.perf_counter() - started
            outputs.print_summary(cfg.task_name, status, metrics, run_dir, seconds, is_multirun())


def _build(path: str, node: DictConfig, **extra: Any) -> Any:
    log.info("Instantiating %s <%s>", path, node.get("_target_"))
    return build(node, path, **extra)


def _check_trainer(trainer_cfg: DictConfig) -> None:
    """The budget is in optimizer steps (-1, no limit, only with an epoch limit), and a GPU
    that is asked for must exist: Lightning's own message says only 'No supported gpu backend'."""
    max_steps = trainer_cfg.get("max_steps", -1)
    if trainer_cfg.get("max_epochs") in (None, -1) and not trainer_cfg.get("fast_dev_run"):
        check_int("trainer.max_steps", max_steps, minimum=1)
    else:
        check_int("trainer.max_steps", max_steps, minimum=-1)
    if trainer_cfg.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "trainer.accelerator",
            trainer_cfg.accelerator,
            "torch sees no CUDA GPU on this machine; use trainer=cpu, or trainer=auto "
            "to take a GPU when there is one",
        )


def _check_optimizer(
    node: DictConfig, make_optimizer: Callable[..., Any], network: nn.Module
) -> None:
    """Build the optimizer once now, so that torch's checks of its values run before training."""
    if "lr" in node:
        check_float("optimizer.lr", node.lr, above=0)
    try:
        make_optimizer(network.parameters())
    except (TypeError, ValueError) as error:
        raise ConfigError("optimizer", node.get("_target_"), str(error)) from None


def _final(trainer: L.Trainer, task: Task) -> dict[str, float]:
    """The task's metrics among the trainer's latest values, as floats."""
    latest = trainer.callback_metrics
    return {name: float(latest[name]) for name in task.metric_names if name in latest}


@hydra.main(version_base="1.3", config_path=None, config_name="train")
def _hydra_main(cfg: DictConfig) -> dict[str, float]:
    try:
        return train(cfg)
    except ConfigError as error:
        log.error("%s", error)
        if is_multirun():
            raise  # this job fails alone; Hydra reports it once the sweep is done
        raise SystemExit(2) from None


def main() -> None:
    if not (CONFIG_DIR / "train.yaml").is_file():
        sys.exit(f"nnlab: no configs at {CONFIG_DIR}; install nnlab with `pip install -e <repo>`")
    sys.argv[1:1] = ["--config-dir", str(CONFIG_DIR)]
    _hydra_main()


if __name__ == "__main__":
    # Run through the importable module, not __main__, so parallel sweep workers can unpickle the
    # task function (and register nnlab's config resolvers) by importing nnlab.train.
    from nnlab.train import main as importable_main

    importable_main()
