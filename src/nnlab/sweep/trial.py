"""A search's trial as its job sees it: its Optuna trial, its run dir, and its pruner.

The search runs each trial as a Hydra job, not inside `Study.optimize`, so the job finds its
Optuna trial itself: the sweeper gives the job its trial's number (search.TRIAL, through
Hydra's `hydra.job.env_set`), and the job opens the study from its storage. There it records
its run dir (RUN_DIR), so that a search that continues the study resumes an interrupted
trial in place, even one whose search was killed. With `hydra.sweeper.pruner=median`, at every
validation the trial reports the search's metric (step: the epoch) and asks the pruner; a
pruned trial saves its `last.ckpt` and stops at once, its metrics.json saying `pruned`, and
the search tells the study so.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.trainer.states import TrainerFn

from nnlab.errors import ConfigError, Pruned

log = logging.getLogger("nnlab")

PRUNERS = {  # hydra.sweeper.pruner: Optuna's pruners by name
    "median": "MedianPruner",
    "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner",
}


def make_pruner(name: str | None, arguments: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Optuna's pruner `name` with `arguments`; Optuna's NopPruner for None."""
    if name is None:
        return optuna.pruners.NopPruner()
    make = getattr(optuna.pruners, PRUNERS[name])
    try:
        return make(**arguments)
    except (TypeError, ValueError) as error:  # Optuna's own checks
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reason = f"{make.__name__} refused it ({type(error).__name__}: {reason})"
        raise ConfigError("hydra.sweeper.pruner_args", arguments, reason) from None


def this_trial() -> optuna.Trial | None:
    """The Optuna trial this job runs, with the search's pruner; None outside a search's job,
    or when the study's storage does not answer (the trial then runs unpruned, and the log
    says why)."""
    from sqlalchemy.exc import SQLAlchemyError

    from nnlab.sweep.search import TRIAL, rdb_storage, storage_url

    number = os.environ.get(TRIAL)
    if number is None or not HydraConfig.initialized():
        return None
    sweeper = HydraConfig.get().sweeper
    try:
        storage = rdb_storage(storage_url(sweeper.storage))
        pruner = make_pruner(sweeper.get("pruner"), dict(sweeper.get("pruner_args") or {}))
        study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
        study_id = storage.get_study_id_from_name(sweeper.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
    except (SQLAlchemyError, KeyError) as error:
        log.warning("Trial %s did not reach its study: %s", number, str(error).splitlines()[0])
        return None
    return optuna.Trial(study, trial_id)


def record_run_dir(trial: optuna.Trial, run_dir: Path) -> None:
    """The trial's run dir, on its Optuna trial (search.RUN_DIR): a search that continues the
    study resumes it there if it is interrupted. Best effort: a trial another process has
    failed meanwhile (as stale) takes no attribute, and runs on."""
    from sqlalchemy.exc import SQLAlchemyError

    from nnlab.sweep.search import RUN_DIR

    try:
        trial.set_user_attr(RUN_DIR, str(run_dir))
    except (SQLAlchemyError, RuntimeError) as error:
        log.warning("Trial %d's run dir not recorded: %s", trial.number, error)


def pruning_callback(trial: optuna.Trial | None, checkpoint: Path) -> L.Callback | None:
    """The callback that reports a pruned search's trial to its study; None for any other job."""
    if trial is None or not HydraConfig.get().sweeper.get("pruner"):
        return None
    return ReportsToItsTrial(trial, str(HydraConfig.get().sweeper.metric), checkpoint)


class ReportsToItsTrial(L.Callback):
    """At every validation while fitting: the metric to the trial, and a stop if it is pruned.
    Under DDP rank 0 reports and asks, and every rank stops with it."""

    def __init__(self, trial: optuna.Trial, metric: str, checkpoint: Path) -> None:
        self.trial, self.metric, self.checkpoint = trial, metric, checkpoint

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.metric)
        pruned = False
        if trainer.is_global_zero and value is not None:
            with warnings.catch_warnings():  # a requeued trial reports its epochs again
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                self.trial.report(float(value), trainer.current_epoch)
            pruned = self.trial.should_prune()
        if trainer.strategy.broadcast(pruned, src=0):
            trainer.save_checkpoint(self.checkpoint, weights_only=False)
            reported = math.nan if value is None else float(value)
            raise Pruned(trainer.current_epoch, self.metric, reported)
