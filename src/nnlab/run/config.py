"""The checks of a composed config that need neither torch nor Lightning.

They run first in every run, before the imports that take seconds, so that a mistyped key or
an impossible trainer count answers at once. A value that only a class can judge (a model's
width, an optimizer's arguments) is checked by its constructor, once the imports are done.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from nnlab.checks import check_bool, check_int
from nnlab.errors import ConfigError
from nnlab.overrides import command_overrides, key_of, values
from nnlab.run.layout import is_other_rank, unwritable

# The top-level keys of conf/train.yaml: anything else is a typo (+seeds=0,1,2 would sweep nothing).
TOP_LEVEL_KEYS = (
    "task_name", "tags", "seed", "threads", "ckpt_path", "init_from", "analyse",
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
# What a cluster launcher sets in every process of a several-node job: SLURM's job, or the
# node rank and rendezvous address that torchrun (or a user) gives Lightning's own environment.
CLUSTER_VARIABLES = (("SLURM_JOB_ID",), ("NODE_RANK", "MASTER_ADDR"))


def check_config(cfg: DictConfig) -> None:
    """The config's own values: the options chosen, top-level keys, threads, seed, tags, the
    trainer's counts and budget; the model and optimizer configs, dropped where the task does
    not use them. Raises ConfigError naming the key."""
    check_choices()
    _drop_unused_groups(cfg)
    placed = None
    if HydraConfig.initialized():
        placed = OmegaConf.select(HydraConfig.get(), "runtime.output_dir", throw_on_missing=False)
    if placed:  # in Hydra's job (not the compose API): one run, one dir, under paths.log_dir
        placed = Path(placed).resolve()
        if Path(str(cfg.paths.output_dir)).resolve() != placed:
            reason = f"a run's files go to the dir Hydra made for it ({placed}): leave it unset"
            raise ConfigError("paths.output_dir", cfg.paths.output_dir, reason)
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
    if cfg.get("threads") is not None:  # torch would try to start them all (a MemoryError)
        most = 4 * (os.cpu_count() or 1)
        if check_int("threads", cfg.threads, minimum=1) > most:
            raise ConfigError("threads", cfg.threads, f"expected at most {most}, 4 per core")
    check_bool("analyse", cfg.get("analyse", True))
    if cfg.get("seed") is not None and check_int("seed", cfg.seed, minimum=0) > MAX_SEED:
        raise ConfigError("seed", cfg.seed, f"expected an integer <= {MAX_SEED}")
    _check_trainer(cfg.trainer, (cfg.get("paths") or {}).get("run_name"))
    precision = str(cfg.trainer.get("precision"))
    task = str((cfg.get("task") or {}).get("_target_"))
    if precision.startswith("64") and task.startswith("nnlab.tasks."):
        reason = "nnlab's tasks and their figures compute in float32; use 32-true or bf16-mixed"
        raise ConfigError("trainer.precision", precision, reason)
    _check_writes_inside_its_dirs(cfg)
    for name, logger in (cfg.get("logger") or {}).items():
        folder = logger.get("save_dir") if isinstance(logger, DictConfig) else None
        reason = folder and unwritable(Path(str(folder)))  # it would fail at its first value
        if reason:
            raise ConfigError(f"logger.{name}.save_dir", folder, f"cannot write there ({reason})")


# The settings of Lightning's and nnlab's objects that name where they write files.
WRITES_TO = ("dirpath", "save_dir", "default_root_dir", "artifact_location", "tracking_uri")
DIRS = ("output_dir", "log_dir")  # where they may write: the run's own dir, and paths.log_dir


def _check_writes_inside_its_dirs(cfg: DictConfig) -> None:
    """Every folder that the trainer, its profiler, a callback or a logger writes to lies inside
    the run's own dir or paths.log_dir (MLflow's store is shared there; a remote URI, s3://...,
    http://..., is not a folder here): a run writes nowhere else, and a setting like
    callbacks.model_checkpoint.dirpath=/elsewhere wrote there."""
    dirs = (OmegaConf.select(cfg, f"paths.{d}", throw_on_resolution_failure=False) for d in DIRS)
    homes = [Path(str(d)).expanduser().resolve() for d in dirs if d is not None]
    trainer = cfg.get("trainer") or {}
    nodes = [("trainer", trainer), ("trainer.profiler", trainer.get("profiler"))]
    for group in ("callbacks", "logger"):
        nodes += [(f"{group}.{name}", node) for name, node in (cfg.get(group) or {}).items()]
    for path, node in nodes:
        for key in WRITES_TO if isinstance(node, DictConfig) else ():
            value = str(OmegaConf.select(node, key, throw_on_resolution_failure=False) or "")
            for prefix in ("sqlite:///", "file://", "file:"):
                value = value.removeprefix(prefix)
            local = value and "://" not in value
            folder = Path(value).expanduser().resolve()
            if local and not any(folder.is_relative_to(home) for home in homes):
                reason = f"a run writes only inside its dir and paths.log_dir ({cfg.paths.log_dir})"
                raise ConfigError(f"{path}.{key}", node.get(key), reason)


def check_choices() -> None:
    """The options Hydra composed: each one of its group's files (`experiment=../model/mlp`
    would load another group's file as an experiment), and a search only with -m."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    for group, option in hydra_cfg.runtime.choices.items():
        if option and (".." in str(option).split("/") or str(option).startswith("/")):
            raise ConfigError(group, option, f"name an option of {group}/, not a path")
    typed = {key_of(override) for override in hydra_cfg.overrides.task}
    chose = sorted(typed & {"data", "task"})
    default = hydra_cfg.runtime.choices.get("experiment")
    if chose and "experiment" not in typed and default not in (None, "null"):
        given = " ".join(f"{g}={hydra_cfg.runtime.choices.get(g)}" for g in chose)
        reason = (
            f"the default experiment sets its own name, budget and model over {given}; add "
            "~experiment to compose them alone, or name the experiment they belong to"
        )
        raise ConfigError("experiment", default, reason)
    search = hydra_cfg.runtime.choices.get("hparams_search")
    if search not in (None, "null") and hydra_cfg.mode == RunMode.RUN:
        raise ConfigError("hparams_search", search, "a search runs its trials as a sweep: add -m")


# Where Hydra writes a run before nnlab's code runs: set on the command line, they would place
# its files outside paths.log_dir, unchecked. (hydra.sweep.dir stays open: nnlab-reproduce
# places its sweeps with it.)
PLACED_BY_NNLAB = ("hydra.run.dir", "hydra.output_subdir")


def refuse_before_compose(overrides: list[str], config_dir: Path) -> None:
    """What the command line must not say, refused before Hydra acts on it: `experiment=null`
    (Hydra 1.3 refuses a group's null option with a traceback; ~experiment drops the group),
    and the dirs Hydra writes to before any check of nnlab's can run."""
    from nnlab.overrides import parse

    for override in overrides:
        key, equals, value = override.lstrip("+~").partition("=")
        if override.startswith("-") or not equals:
            continue
        if key in PLACED_BY_NNLAB and not is_other_rank():  # Lightning places DDP's others
            reason = "nnlab places every run under paths.log_dir/<task_name>: set those instead"
            raise ConfigError(key, value, reason)
        if (config_dir / key).is_dir() and parse([override])[0].value() is None:
            reason = f"Hydra drops a config group with ~{key}: write ~{key} to compose without one"
            raise ConfigError(key, value, reason)


def _drop_unused_groups(cfg: DictConfig) -> None:
    """The model and optimizer configs reach a task through `${model}` and `${optimizer}` in its
    config (nnlab's tasks, a module written like them). A task that names neither builds its
    own: they are dropped, so that the header and HPARAMS show only what the run uses, and one
    typed on the command line is refused (a sweep over optimizer.lr would change nothing)."""
    task = cfg.get("task")
    raw = OmegaConf.to_container(task, resolve=False) if isinstance(task, DictConfig) else {}
    typed = {key_of(o): o for o in (command_overrides() if HydraConfig.initialized() else [])}
    for group in ("model", "optimizer"):
        if cfg.get(group) is None or _interpolates(raw, group):
            continue
        for key, override in typed.items():
            if key == group or key.startswith(f"{group}."):
                target = str((task or {}).get("_target_", "the task")).rpartition(".")[2]
                reason = (
                    f"{target} does not take the {group} config (its task config names no "
                    f"${{{group}}}): set its own arguments, task.<name>=..."
                )
                raise ConfigError(key, values([override]).get(key), reason)
        with open_dict(cfg):
            cfg[group] = None


def _interpolates(node: Any, group: str) -> bool:
    """Whether a plain config tree refers to the top-level `group` anywhere."""
    if isinstance(node, dict):
        return any(_interpolates(value, group) for value in node.values())
    if isinstance(node, list):
        return any(_interpolates(value, group) for value in node)
    return isinstance(node, str) and re.search(rf"\$\{{{group}(\.|\}})", node) is not None


def _check_trainer(trainer: DictConfig, run_name: str | None = None) -> None:
    """Counts that Lightning checks with bare asserts; a budget (-1 steps, no limit, only with
    an epoch limit); processes Lightning would start, or wait for, without end."""
    for key, minimum in TRAINER_INTEGERS.items():
        if trainer.get(key) is not None:
            check_int(f"trainer.{key}", trainer[key], minimum=minimum)
    for key, value in trainer.items():
        if isinstance(value, float) and not math.isfinite(value):  # gradient_clip_val=nan
            raise ConfigError(f"trainer.{key}", value, "expected a finite number")
    if trainer.get("limit_train_batches") == 0:
        raise ConfigError("trainer.limit_train_batches", 0, "0 batches trains nothing")
    if trainer.get("max_epochs") == 0:
        raise ConfigError("trainer.max_epochs", 0, "0 epochs trains nothing; expected -1 or >= 1")
    epochs_unlimited = trainer.get("max_epochs") in (None, -1) and not trainer.get("fast_dev_run")
    check_int(
        "trainer.max_steps", trainer.get("max_steps", -1), minimum=1 if epochs_unlimited else -1
    )
    interval = trainer.get("val_check_interval")
    if isinstance(interval, float) and not 0 < interval <= 1:  # a share of the epoch
        raise ConfigError("trainer.val_check_interval", interval, "expected a share in (0, 1]")
    if interval is not None and not isinstance(interval, float):  # a count of batches
        check_int("trainer.val_check_interval", interval, minimum=1)
    nodes = check_int("trainer.num_nodes", trainer.get("num_nodes", 1), minimum=1)
    if nodes > 1 and not any(all(v in os.environ for v in vs) for vs in CLUSTER_VARIABLES):
        raise ConfigError(
            "trainer.num_nodes",
            nodes,
            "several nodes need a cluster launcher to start the other nodes' processes "
            "(hydra/launcher=slurm, or torchrun setting NODE_RANK and MASTER_ADDR); none is here",
        )
    slurm_starts_the_nodes = "SLURM_JOB_ID" in os.environ  # a sweep's job: its own dir
    if nodes > 1 and not slurm_starts_the_nodes and run_name is None:
        reason = "each node started by hand names its run dir the same: set paths.run_name"
        raise ConfigError("trainer.num_nodes", nodes, reason)
    devices, cores = trainer.get("devices", 1), os.cpu_count() or 1
    if trainer.get("accelerator") == "cpu" and isinstance(devices, int) and devices > cores:
        reason = f"DDP on the CPU runs a process per device, and this machine has {cores} cores"
        raise ConfigError("trainer.devices", devices, reason)


def searchpath_groups(searchpath: Any) -> str:
    """`--help`'s list of the groups on `hydra.searchpath` (your own configs): Hydra's list
    shows only nnlab's, since it reads the search path before the command line's."""
    import importlib.resources

    groups: dict[str, set[str]] = {}
    for entry in searchpath or []:
        scheme, _, where = str(entry).partition("://")
        try:
            root = Path(where) if scheme == "file" else importlib.resources.files(where)
        except (ModuleNotFoundError, TypeError, ValueError):
            continue  # a package that does not import: composing says so
        for config in Path(str(root)).rglob("*.yaml"):
            group = config.parent.relative_to(Path(str(root))).as_posix()
            if group != "." and not group.startswith("hydra"):
                groups.setdefault(group, set()).add(config.stem)
    listed = "".join(f"{g}: {', '.join(sorted(o))}\n" for g, o in sorted(groups.items()))
    return f"\nOn hydra.searchpath:\n{listed}" if listed else ""
