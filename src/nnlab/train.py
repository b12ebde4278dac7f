"""`nnlab-train`: Hydra composes the config, once; the run is built, fitted, tested, recorded.

    nnlab-train experiment=wave model.hidden_nodes=20
    nnlab-train -m experiment=rings model.hidden_nodes=1,2,3 model.activation=sigmoid,relu
    nnlab-train experiment=wave ckpt_path=last      # resume the newest unfinished wave run
    nnlab-train experiment=wave init_from=logs/wave/runs/<stamp> trainer.max_steps=5000

`train(cfg)` is the one path every run takes, from this command, a sweep's job or nnlab.api.
"""

from __future__ import annotations

import logging
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

import nnlab
from nnlab import compat
from nnlab.errors import (
    ConfigError,
    Interrupted,
    NotRun,
    Pruned,
    RunDirGone,
    RunStopped,
    exits,
    stop,
    stopped,
)
from nnlab.overrides import command_overrides
from nnlab.run import layout, resume
from nnlab.run.config import check_config, refuse_before_compose
from nnlab.run.console import (
    DETAILS,
    quiet_console,
    quiet_libraries,
    running_in,
    warnings_logged,
)
from nnlab.run.record import Record, has_stage, recording, test_and_analyse
from nnlab.sweep import devices, signals

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger("nnlab")
layout.register_resolvers()
# The repository's conf/: nnlab is installed in editable mode (make does), and Hydra takes an
# absolute config_path as it is.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
JOBS_AT_ONCE = "NNLAB_JOBS_AT_ONCE"  # set by nnlab's sweepers for the jobs they run in parallel
DDP_IN_A_SWEEP = (
    "DDP starts its own processes by running the command again, which only a single "
    "nnlab-train run can: in a sweep use hydra/launcher=slurm (SLURM starts them)"
)


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

    def logged_metrics(self) -> dict[str, float]:
        """Every scalar the module has logged, at its latest value, a resumed run's earlier
        ones included (nnlab.run.callbacks.ResumeState)."""
        from nnlab.run.callbacks import ResumeState

        keeper = next(c for c in self.trainer.callbacks if isinstance(c, ResumeState))
        return keeper.metrics(self.trainer)


def train(cfg: DictConfig, starts_processes: bool = False) -> Run:
    """Check the config, build the run, fit it (resumed, or from `init_from`'s weights),
    validate the final weights, test, analyse, and record: metrics.json is written however the
    run ends, its `status` saying how. `starts_processes`: Lightning may start DDP's other
    processes by running this process's command again (a single nnlab-train run)."""
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; the compose API does not
    layout.placed()
    last_checkpoint = layout.checkpoint(run_dir, "last")
    if is_multirun() and os.environ.get(devices.DEVICES):  # before CUDA starts in this worker
        sweep = signals.sweep_of_this_job()  # a trial resumed in place: the new sweep's slots
        device = devices.take_a_device(sweep, os.environ[devices.DEVICES].split(","))
        log.info("%s: on device %s (CUDA_VISIBLE_DEVICES=%s)", run_dir.name, device, device)
    if is_multirun() and not cfg.get("ckpt_path") and finds_its_dir_again():
        if resumes_in_place(run_dir):
            with open_dict(cfg):
                cfg.ckpt_path = str(run_dir)
        else:  # it runs again from the start: its failed attempt's last.ckpt is not its own
            last_checkpoint.unlink(missing_ok=True)
    key = "ckpt_path" if cfg.get("ckpt_path") else "paths.output_dir"
    # A local sweep's jobs have the sweep's own stop (nnlab.sweep.signals); a SLURM job's
    # signals are its own (SIGTERM outside training was submitit's to ignore, until SIGKILL).
    at_once = signals.interrupted_at_once(last_checkpoint)
    if signals.is_cluster_job():
        signals.take_the_clusters_signals()
    elif is_multirun():
        at_once = nullcontext()
    try:
        with (
            warnings_logged(),
            running_in(run_dir),
            layout.locked(run_dir, key),
            recording(run_dir, cfg, cfg.task_name) as record,
            at_once,
        ):
            # a resume that a stop keeps from starting leaves its run as it was
            record.resuming = bool(cfg.get("ckpt_path"))
            stopped_by = is_multirun() and signals.stopped_by(signals.sweep_of_this_job())
            if stopped_by:  # a signal stopped the sweep before this job started
                raise NotRun(stopped_by.name)
            if is_multirun() and signals.sweep_is_gone():  # killed: no signal, no mark
                raise NotRun("SIGKILL")
            if is_multirun():
                signals.end_with_the_sweep()
            checkpoint = None
            if cfg.get("ckpt_path"):
                resume.replay(cfg, run_dir)  # the run's own settings, beneath this command's
                resume.check_same_code(cfg, run_dir, key="ckpt_path")  # a run dir names no code
                checkpoint = layout.resumed_checkpoint(str(cfg.ckpt_path), run_dir)
            check_config(cfg)  # before the seconds of importing torch and Lightning
            run = record.run = build_run(cfg, starts_processes, resumes=checkpoint)
            if checkpoint is not None:
                record.resumed_from = resume.check_resumable(run.task, cfg, checkpoint)
            elif cfg.get("init_from"):
                start = resume.weights_file(str(cfg.init_from), "init_from")
                resume.load_weights(run.task, start, "init_from")
                log.info("Starting from the weights of %s", start)
            _fit_validate_and_test(run, record, checkpoint)
    except Exception:
        if not run_dir.is_dir():  # removed under the run: each writer failed its own way
            raise RunDirGone(str(run_dir)) from None
        raise
    finally:
        distributed = sys.modules.get("torch.distributed")  # only if a run got that far
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            # Gloo's threads, left to the interpreter's exit, can abort the process
            # ("terminate called without an active exception"; seen once in CI).
            distributed.destroy_process_group()
    run.metrics = layout.read_metrics(run_dir) or record.metrics  # with its status, as written
    # Values, not interpolations: ${hydra:...} resolves only while Hydra's job runs.
    run.cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return run


def finds_its_dir_again() -> bool:
    """Whether this sweep job may find its dir as an earlier run of it left it: a job of a
    resumed sweep (nnlab.sweep.grid.RESUMED), or a SLURM job that SLURM requeued."""
    from nnlab.sweep.grid import RESUMED

    return os.environ.get(RESUMED) == "1" or signals.is_cluster_job()


def resumes_in_place(run_dir: Path) -> bool:
    """Whether a sweep's job finds its dir holding its own unfinished run, which it then
    resumes: a SLURM job requeued after a pre-emption (nnlab.sweep.signals.requeue_and_exit)
    or a node's failure. Interrupted, or killed before it could say (no metrics.json), with a
    last.ckpt; a failed run starts again."""
    if not layout.checkpoint(run_dir, "last").is_file():
        return False
    return layout.read_metrics(run_dir).get("status", "interrupted") == "interrupted"


def build_run(cfg: DictConfig, starts_processes: bool = False, resumes: Path | None = None) -> Run:
    """Build everything the config describes, each object once, by Hydra: data, task, loggers,
    callbacks (nnlab's own added) and trainer; `resumes`: the checkpoint the run resumes from.
    A bad value anywhere stops the run here."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from nnlab.run import callbacks as nnlab_callbacks
    from nnlab.run.build import build, check_network_fits, locate
    from nnlab.run.loaders import make_training_loaders_resumable
    from nnlab.sweep.trial import pruning_callback, record_run_dir, this_trial

    quiet_libraries()
    if not nnlab.USER_SET_NVML_CHECK:  # see nnlab/__init__.py
        os.environ.pop(nnlab.NVML_CHECK, None)
    if is_multirun():  # parallel jobs share one terminal: warnings and one line each
        quiet_console()
    threads = configure_threads(cfg.get("threads"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True, verbose=False)
    check_network_fits(cfg)
    datamodule, task = build(cfg, "data"), build(cfg, "task")
    _check_shapes(datamodule, task)
    resume.allow_partials(cfg)
    resume.keep_checkpoints_loadable(task, datamodule)
    make_training_loaders_resumable(datamodule, task)
    loggers = [build(cfg, f"logger.{name}") for name in cfg.get("logger") or {}]
    callbacks = [build(cfg, f"callbacks.{name}") for name in cfg.get("callbacks") or {}]
    last = layout.checkpoint(cfg.paths.output_dir, "last")
    callbacks.insert(0, nnlab_callbacks.MonitorChoice(resumes))  # before an EarlyStopping reads it
    callbacks += [
        nnlab_callbacks.TrainingGuard(),  # first: it reads the losses before a stop saves
        nnlab_callbacks.GracefulStop(last),
        nnlab_callbacks.ResumeState(),
    ]
    trial = this_trial() if is_multirun() else None  # a search's job: its Optuna trial
    if trial is not None:  # where it runs, so that a later search can resume it in place
        record_run_dir(trial, Path(cfg.paths.output_dir))
    if (reports := pruning_callback(trial, last)) is not None:  # a pruned search's
        callbacks.append(reports)
    # Without a ModelCheckpoint among the callbacks, Lightning would add its own.
    settings = {"enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in callbacks)}
    if is_multirun():
        settings |= {"enable_progress_bar": False, "enable_model_summary": False}
    if settings.get("enable_progress_bar", cfg.trainer.get("enable_progress_bar", True)):
        trainer_settings = OmegaConf.to_container(cfg.trainer, resolve=True)
        callbacks.append(nnlab_callbacks.progress_bar(trainer_settings))
    _check_accelerator(cfg.trainer)
    trainer_class = locate(str(cfg.trainer.get("_target_")), "trainer._target_")
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, L.Trainer)):
        expected = "expected lightning.pytorch.Trainer or a subclass of it"
        raise ConfigError("trainer._target_", cfg.trainer.get("_target_"), expected)
    if not cfg.trainer.get("plugins"):  # a config's own plugins are as the user wrote them
        settings["plugins"] = [nnlab_callbacks.WholeCheckpoints()]
    trainer = build(cfg, "trainer", logger=loggers or False, callbacks=callbacks, **settings)
    compat.skip_empty_hooks(trainer.callbacks, task)
    launches = (
        trainer.world_size > 1
        and not trainer.strategy.cluster_environment.creates_processes_externally
    )
    if launches and not starts_processes:  # Lightning starts them by running the command again
        raise ConfigError("trainer.devices", cfg.trainer.get("devices"), DDP_IN_A_SWEEP)
    run = Run(cfg, Path(cfg.paths.output_dir), datamodule, task, trainer)
    _describe(run, threads)
    return run


def _fit_validate_and_test(run: Run, record: Record, checkpoint: Path | None) -> None:
    from nnlab.run.build import fit_error
    from nnlab.run.callbacks import TrainingGuard

    trainer, task, datamodule = run.trainer, run.task, run.datamodule
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
    except Exception as error:
        if isinstance(error, RunStopped):
            raise
        if record.left_as_it_was("failed"):  # Lightning refused the checkpoint's state, or the
            # first step failed: the run has not moved, so it stays resumable.
            logging.getLogger(DETAILS).info("Resuming %s failed", checkpoint, exc_info=True)
            reason = f"resuming failed before its first step ({type(error).__name__}: {error})"
            raise resume.refusal(run.cfg, reason.splitlines()[0]) from None
        known = fit_error(run.cfg, error)
        if known is None:
            raise
        raise known from None
    record.metrics.update(run.logged_metrics())
    record.note = _early_stop_note(trainer)
    guard = next(c for c in trainer.callbacks if isinstance(c, TrainingGuard))
    validates = has_stage(task, datamodule, "validation_step", "val_dataloader")
    with signals.interrupting(trainer, layout.checkpoint(run.run_dir, "last")):
        if trainer.limit_val_batches and guard.validated_at != trainer.global_step and validates:
            trainer.validate(task, datamodule=datamodule, verbose=False)  # the final weights'
            record.metrics.update(run.logged_metrics())
        record.metrics.update(test_and_analyse(run, run.run_dir))


def _early_stop_note(trainer: L.Trainer) -> str:
    """` (stopped early at step N: val/loss did not improve for K checks)`, the same for a
    trainer.max_time that ran out, or ""."""
    from lightning.pytorch.callbacks import EarlyStopping, Timer

    for callback in trainer.callbacks:
        remaining = callback.time_remaining("train") if isinstance(callback, Timer) else None
        if remaining is not None and remaining <= 0:
            step = trainer.global_step
            return f" (stopped early at step {step}: trainer.max_time ran out)"
        if isinstance(callback, EarlyStopping) and callback.wait_count >= callback.patience > 0:
            checks = f"{callback.wait_count} check{'s' * (callback.wait_count != 1)}"
            step, monitor = trainer.global_step, callback.monitor
            return f" (stopped early at step {step}: {monitor} did not improve for {checks})"
    return ""


def configure_threads(threads: int | None) -> int:
    """torch's thread count: `threads`, else OMP_NUM_THREADS, else this job's share of the cores.
    Parallel jobs that each use every core fight over them (on a busy 2-core machine, many
    times slower, not 2x); one job per core with one thread each is faster in total."""
    import torch

    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = max(1, int(os.environ["OMP_NUM_THREADS"]))  # the user's, as torch reads it
    if threads is None:
        try:
            cores = len(os.sched_getaffinity(0))  # a SLURM or cgroup CPU set, not the machine
        except AttributeError:  # macOS and Windows
            cores = os.cpu_count() or 1
        threads = max(1, cores // max(1, min(cores, int(os.environ.get(JOBS_AT_ONCE, 1)))))
    torch.set_num_threads(threads)
    return threads


def _describe(run: Run, threads: int) -> None:
    """The run's key settings, on the console and in train.log: what the command changed,
    what was built, the budget and where it runs. The model summary goes to train.log."""
    import torch
    from lightning.pytorch.utilities.model_summary import ModelSummary

    cfg, task, trainer = run.cfg, run.task, run.trainer
    changed = " ".join(command_overrides())
    log.info("%s: %s", cfg.task_name, changed or "the defaults")
    built = [type(task).__name__]
    network = getattr(task, "network", None)
    if isinstance(network, torch.nn.Module):
        parameters = list(network.parameters())
        lazy = any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in parameters)
        count = "?" if lazy else f"{sum(p.numel() for p in parameters):,}"
        built.append(f"{type(network).__name__} network of {count} parameters")
    built.append(type(run.datamodule).__name__)
    optimizer = cfg.get("optimizer") or {}
    if optimizer.get("_target_"):
        lr = f" (lr {optimizer.lr:g})" if isinstance(optimizer.get("lr"), int | float) else ""
        built.append(f"{optimizer._target_.rpartition('.')[2]}{lr}")
    log.info("  %s", ", ".join(built))
    budget = trainer_budget(cfg.trainer)
    device = type(trainer.accelerator).__name__.removesuffix("Accelerator")
    devices = f"{trainer.num_devices} {device}s" if trainer.num_devices > 1 else device
    log.info("  %s on %s with %d torch thread(s)", budget, devices, threads)
    logging.getLogger(DETAILS).info("Model summary:\n%s", ModelSummary(task, max_depth=2))


def trainer_budget(trainer: DictConfig) -> str:
    if trainer.get("fast_dev_run"):
        return "fast_dev_run"
    if (trainer.get("max_steps") or -1) > 0:
        return f"{trainer.max_steps:,} optimizer steps"
    return f"{trainer.get('max_epochs')} epochs"


def _check_shapes(datamodule: Any, task: Any) -> None:
    """The data's inputs must fit the network's first layer (data=wave with the rings' MLP
    would otherwise fail at the first step, with a matrix-shape error)."""
    data_features = getattr(datamodule, "input_features", None)
    model_features = getattr(getattr(task, "network", None), "in_features", None)
    if data_features is not None and model_features not in (None, data_features):
        raise ConfigError(
            "model.in_features",
            model_features,
            f"the data have {data_features} input features; pick an experiment= that matches them",
        )


def _check_accelerator(trainer: DictConfig) -> None:
    import torch

    accelerator = trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        missing = "torch sees no CUDA GPU on this machine"
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        missing = "torch sees no Apple MPS device on this machine"
    else:
        return
    instead = "use trainer=cpu, or trainer=auto to take a GPU when there is one"
    raise ConfigError("trainer.accelerator", accelerator, f"{missing}; {instead}")


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _job(cfg: DictConfig) -> dict[str, float]:
    """One job of nnlab-train: its single run, or one of its sweep's."""
    if is_multirun() and finds_its_dir_again():  # a job that had completed is kept as it was
        kept = layout.read_metrics(cfg.paths.output_dir)
        if str(kept.get("status", "")).startswith(("completed", Pruned.status)):
            log.info("%s: completed before; kept as it was", Path(cfg.paths.output_dir).name)
            return kept
    try:
        return train(cfg, starts_processes=not is_multirun()).metrics
    except Exception as error:
        known = stopped(error)
        if known is not None and not is_multirun():
            stop(known)
        if isinstance(known, Pruned):  # a search's trial, ended as its pruner asked
            return layout.read_metrics(cfg.paths.output_dir)
        if isinstance(known, Interrupted) and signals.is_cluster_job():
            signals.requeue_and_exit(known.signum)  # it resumes in place: resumes_in_place
        elif isinstance(known, Interrupted):  # a signal stops the whole (local) sweep
            signals.mark_stopped(signals.sweep_of_this_job(), known.signum)
        raise  # a bug; or a sweep's job, which fails alone: the sweep reports it when done


def main() -> None:
    if not (CONFIG_DIR / "train.yaml").is_file():
        sys.exit(f"nnlab: no configs at {CONFIG_DIR}; install nnlab with `pip install -e <repo>`")
    with exits():
        refuse_before_compose(sys.argv[1:], CONFIG_DIR)
        _job()


if __name__ == "__main__":
    # Run through the importable module, not __main__, so that parallel sweep workers can
    # unpickle the job function (and register nnlab's resolvers) by importing nnlab.train.
    from nnlab.train import main as importable_main

    importable_main()
