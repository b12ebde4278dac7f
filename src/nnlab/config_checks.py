"""Checks of a composed config that need neither torch nor Lightning.

They run first in every run, before the imports that take seconds, so that a mistyped key or
an impossible trainer count answers at once. Values that only a class can judge (a model's
width, an optimizer's arguments) are checked by its constructor, once the imports are done.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig

from nnlab.checks import BadValue, check_int, check_writable
from nnlab.errors import ConfigError
from nnlab.runtime import in_joblib_sweep

# The top-level keys of conf/train.yaml: anything else is a typo (+seeds=0,1,2 would sweep nothing).
TOP_LEVEL_KEYS = (
    "task_name", "tags", "seed", "threads", "ckpt_path", "init_from",
    "paths", "data", "model", "task", "optimizer", "trainer", "logger", "callbacks",
)  # fmt: skip

MAX_SEED = 2**32 - 1  # numpy's limit, which Lightning's seed_everything enforces late

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


def check_config(cfg: DictConfig) -> None:
    """The config's own values: top-level keys, threads, seed, trainer counts and budget,
    where loggers write. Raises ConfigError naming the key."""
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            allowed = ", ".join(TOP_LEVEL_KEYS)
            raise ConfigError(
                str(key), cfg[key], f"unknown top-level key; the config has: {allowed}"
            )
    tags = cfg.get("tags")
    if tags is not None and not (
        isinstance(tags, ListConfig) and all(isinstance(t, str | int | float) for t in tags)
    ):
        raise ConfigError("tags", tags, "expected a list of words, e.g. tags=[baseline,small]")
    if cfg.get("threads") is not None:
        checked(check_int, "threads", cfg.threads, minimum=1)
    if cfg.get("seed") is not None:
        seed = checked(check_int, "seed", cfg.seed, minimum=0)
        if seed > MAX_SEED:
            raise ConfigError("seed", seed, f"expected an integer <= {MAX_SEED}")
    _check_trainer(cfg.trainer)
    precision = str(cfg.trainer.get("precision"))
    task = str((cfg.get("task") or {}).get("_target_", ""))
    if precision.startswith("64") and task.startswith("nnlab.tasks."):
        raise ConfigError(
            "trainer.precision",
            precision,
            "nnlab's tasks and their figures compute in float32; use 32-true, bf16-mixed or "
            "16-mixed",
        )
    for name, node in (cfg.get("logger") or {}).items():
        if node.get("save_dir"):  # a logger writes there only at its first value: check now
            checked(check_writable, f"logger.{name}.save_dir", str(node.save_dir))


def _check_trainer(trainer_cfg: DictConfig) -> None:
    """Counts that Lightning checks with bare asserts; a budget (-1 steps, no limit, only with
    an epoch limit); DDP inside a joblib sweep."""
    for key, minimum in TRAINER_INTEGERS.items():
        if trainer_cfg.get(key) is not None:
            checked(check_int, f"trainer.{key}", trainer_cfg[key], minimum=minimum)
    if trainer_cfg.get("max_epochs") == 0:
        raise ConfigError("trainer.max_epochs", 0, "0 epochs trains nothing; expected -1 or >= 1")
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
    _check_nodes(trainer_cfg.get("num_nodes", 1))
    devices = trainer_cfg.get("devices", 1)
    if devices not in (1, "1", "auto") and in_joblib_sweep():
        raise ConfigError(
            "trainer.devices",
            devices,
            "DDP starts its own processes, which a joblib sweep's workers cannot; sweep with "
            "hydra/launcher=slurm (or basic) instead",
        )


# What a cluster launcher sets in every process of a several-node job: SLURM's job, or the
# node rank and rendezvous address that torchrun (or a user) gives Lightning's own environment.
CLUSTER_VARIABLES = (("SLURM_JOB_ID",), ("NODE_RANK", "MASTER_ADDR"))


def _check_nodes(num_nodes: Any) -> None:
    """More than one node needs something that starts the processes on the other nodes: here
    Lightning would wait for them for ever."""
    checked(check_int, "trainer.num_nodes", num_nodes, minimum=1)
    if num_nodes > 1 and not any(all(v in os.environ for v in vs) for vs in CLUSTER_VARIABLES):
        raise ConfigError(
            "trainer.num_nodes",
            num_nodes,
            "several nodes need a cluster launcher to start the other nodes' processes "
            "(hydra/launcher=slurm, or torchrun setting NODE_RANK and MASTER_ADDR); none is here",
        )


def checked(check: Callable[..., Any], key: str, *args: Any, **kwargs: Any) -> Any:
    """A nnlab.checks function on a key outside any instantiated node: BadValue as ConfigError."""
    try:
        return check(key, *args, **kwargs)
    except BadValue as error:
        raise ConfigError.from_bad_value(error) from None
