"""`nnlab-train`: compose the config with Hydra, train, test, and write the run's results.

nnlab-train experiment=wave model.hidden_nodes=20
nnlab-train -m experiment=rings model.hidden_nodes=1,2,3 model.activation=sigmoid,relu
nnlab-train experiment=wave ckpt_path=last      # resume the newest wave run
nnlab-train experiment=wave init_from=logs/wave/runs/<stamp> trainer.max_steps=5000
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nnlab import resume, sweeps
from nnlab.cli import run_hydra
from nnlab.config_checks import check_config
from nnlab.errors import ConfigError, Interrupted, NotRun, RunStopped, stop
from nnlab.record import Record, recording
from nnlab.runtime import DETAILS, is_multirun, register_resolvers, silence_noise

if TYPE_CHECKING:
    from nnlab.run import Run

log = logging.getLogger("nnlab")
register_resolvers()

# The repository's conf/. (Hydra resolves a relative config_path of a console script's module as
# a package resource, which the top-level conf/ is not, so nnlab hands Hydra the folder itself.)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
SEARCH_NEEDS_MULTIRUN = "a search runs its trials as a sweep: add -m"


def train(cfg: DictConfig) -> Run:
    """The one path every run takes: check, build, fit, validate the final weights, test, and
    write the results.

    metrics.json is written however the run ends, with `status` saying how. Returns the Run:
    its config, data module, trained task and trainer, and its final metrics.
    """
    silence_noise()
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; the compose API does not
    try:
        with recording(run_dir, cfg.task_name) as record:
            _not_after_the_sweep_stopped()
            _refuse_a_search_without_multirun()
            record.resuming = bool(cfg.get("ckpt_path"))
            check_config(cfg)  # before the seconds of importing torch and Lightning
            record.tags = [str(tag) for tag in cfg.get("tags") or []]
            run = record.run = _build(cfg)
            if record.resuming:
                record.resumed_from = resume.check_resumable(run.task, cfg)
            _fit_and_test(run, record)
    finally:
        _leave_the_process_group()
    run.metrics = record.metrics
    # Values, not interpolations: ${hydra:...} resolves only while Hydra's job runs.
    run.cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return run


def _leave_the_process_group() -> None:
    """End DDP's process group before the interpreter ends: Gloo's threads, left to the
    interpreter's exit, can abort the process ("terminate called without an active
    exception"; a DDP test hit it once in CI, and torch's issue tracker describes the cause)."""
    distributed = sys.modules.get("torch.distributed")  # imported only if a run got that far
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


def _build(cfg: DictConfig) -> Run:
    """The run's objects, from the weights of `init_from` if it names a run or checkpoint."""
    from nnlab import checkpoints
    from nnlab.run import build_run  # torch and Lightning load here, not at the top

    run = build_run(cfg)
    if not cfg.get("ckpt_path") and cfg.get("init_from"):  # ckpt_path: checked by nnlab.resume
        start = checkpoints.locate(cfg.init_from, "init_from")
        checkpoints.load_weights(run.task, start, "init_from")
        log.info("Starting from the weights of %s", start)
    return run


def _fit_and_test(run: Run, record: Record) -> None:
    from nnlab import outputs
    from nnlab.record import early_stop_note, has_stage, latest_metrics, test_and_analyse
    from nnlab.run import training_guard
    from nnlab.runtime import prepare_ddp_children

    trainer, task, datamodule = run.trainer, run.task, run.datamodule
    if trainer.is_global_zero and hasattr(task, "metric_names"):
        outputs.log_hparams(trainer.loggers, run.cfg, task.metric_names)
    prepare_ddp_children(trainer, run.run_dir)

    ckpt_path = run.cfg.get("ckpt_path")
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except Exception as error:
        if isinstance(error, RunStopped) or not record.left_as_it_was("failed"):
            raise
        # Lightning refused the checkpoint's state (an optimizer of another kind, say), or the
        # first step failed: the run has not moved, so it stays resumable.
        logging.getLogger(DETAILS).info("Resuming %s failed", ckpt_path, exc_info=True)
        reason = f"resuming failed before its first step ({type(error).__name__}: {error})"
        raise resume.refusal(run.cfg, reason.splitlines()[0]) from None
    record.metrics.update(latest_metrics(trainer))
    if hasattr(task, "unlogged_metrics"):  # nnlab's Task: see its docstring
        record.metrics.update(task.unlogged_metrics())
    record.note = early_stop_note(trainer)
    validated = training_guard(trainer).validated_at == trainer.global_step
    if (
        trainer.limit_val_batches
        and not validated
        and has_stage(run, "validation_step", "val_dataloader")
    ):
        trainer.validate(task, datamodule=datamodule, verbose=False)  # the final weights'
        record.metrics.update(latest_metrics(trainer))
    record.metrics.update(test_and_analyse(run, run.run_dir))


def _not_after_the_sweep_stopped() -> None:
    """A sweep's job that would start after a signal stopped the sweep ends here (nnlab.sweeps)."""
    if is_multirun():
        signum = sweeps.stopped_by(Path(str(HydraConfig.get().sweep.dir)))
        if signum is not None:
            raise NotRun(signal.Signals(signum).name)


def _refuse_a_search_without_multirun() -> None:
    if HydraConfig.initialized() and not is_multirun():
        search = HydraConfig.get().runtime.choices.get("hparams_search")
        if search not in (None, "null"):
            raise ConfigError("hparams_search", search, SEARCH_NEEDS_MULTIRUN)


@hydra.main(version_base="1.3", config_path=None, config_name="train")
def _hydra_main(cfg: DictConfig) -> dict[str, float]:
    try:
        return train(cfg).metrics
    except RunStopped as error:
        if is_multirun():
            if isinstance(error, Interrupted):  # a signal stops the whole sweep
                sweeps.mark_stopped(Path(str(HydraConfig.get().sweep.dir)), error.signum)
            raise  # a sweep's job fails alone; the sweep reports it when it is done
        stop(error)


def main() -> None:
    if not (CONFIG_DIR / "train.yaml").is_file():
        sys.exit(f"nnlab: no configs at {CONFIG_DIR}; install nnlab with `pip install -e <repo>`")
    from nnlab.resume import resume_arguments

    try:
        arguments = resume_arguments(sys.argv[1:], CONFIG_DIR)
    except RunStopped as error:
        stop(error)
    run_hydra(_hydra_main, arguments, CONFIG_DIR)


if __name__ == "__main__":
    # Run through the importable module, not __main__, so parallel sweep workers can unpickle the
    # task function (and register nnlab's config resolvers) by importing nnlab.train.
    from nnlab.train import main as importable_main

    importable_main()
