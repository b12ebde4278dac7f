"""The Hydra plugin shim: Hydra only instantiates sweepers found in the hydra_plugins package.

(No `from __future__ import annotations` here: OmegaConf reads this dataclass's annotations
as types, and Hydra imports plugin modules in a way that postponed annotations cannot resolve.)
"""

import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf wants typing's forms)

from hydra.core.config_store import ConfigStore

# Optuna imports tqdm.auto, which warns in a notebook without ipywidgets; Hydra's plugin scanner
# then prints "warnings from 'hydra_plugins.nnlab_optuna_sweeper'". nnlab shows no Optuna bars.
warnings.filterwarnings("ignore", message="IProgress not found")

from nnlab.sweep.search import OptunaSweeper  # noqa: E402


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.nnlab_optuna_sweeper.sweeper.NnlabOptunaSweeper"
    study_name: str = "search"
    # An SQLite file (or a database URL); null keeps the study in memory, for this run only.
    storage: Optional[str] = "${paths.log_dir}/${task_name}/searches/${hydra.sweeper.study_name}.db"  # noqa: UP045
    # A metric and its direction, or lists of them: [val/acc, train/seconds] with
    # [maximize, minimize] makes a multi-objective study, whose result is a Pareto front.
    metric: Any = "val/acc"
    direction: Any = "maximize"
    n_trials: int = 20
    n_jobs: int = 2
    seed: Optional[int] = 0  # noqa: UP045
    # Seconds between Optuna heartbeats of running trials: a trial whose process stops beating
    # for two intervals is failed and queued again by another process on the same study.
    heartbeat_interval: int = 10
    params: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    # Optuna's sampler: tpe, random, qmc, gp, cmaes (needs the cmaes package), nsga2 or grid
    # (choices and ranges only), and the arguments of its constructor (the seed is `seed`'s).
    sampler: str = "tpe"
    sampler_args: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    # Optuna's pruner: median, hyperband or successive_halving, and its constructor's
    # arguments; the trials report the metric at every validation (step: the epoch).
    pruner: Optional[str] = None  # noqa: UP045
    pruner_args: Dict[str, Any] = field(default_factory=dict)  # noqa: UP006
    # a device per parallel trial (nnlab/sweep/devices.py): ids; null: every GPU of a GPU trainer
    devices: Optional[List[Any]] = None  # noqa: UP006, UP045


class NnlabOptunaSweeper(OptunaSweeper):
    pass


ConfigStore.instance().store(
    group="hydra/sweeper", name="nnlab_optuna", node=OptunaSweeperConf, provider="nnlab"
)
