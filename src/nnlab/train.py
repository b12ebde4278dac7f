"""`nnlab-train`: compose the config with Hydra, train, test, and write the run's results.

nnlab-train experiment=wave model.hidden_nodes=20
nnlab-train -m experiment=rings model.hidden_nodes=1,2,3 model.activation=sigmoid,relu
nnlab-train experiment=wave ckpt_path=last      # resume the newest wave run
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nnlab import outputs
from nnlab.errors import ConfigError, RunStopped
from nnlab.preflight import check_writable, compose_checked, first_job
from nnlab.record import latest_metrics, recording, test_and_analyse
from nnlab.resume import resume_overrides
from nnlab.run import build_run, check_checkpoint
from nnlab.runtime import is_multirun, prepare_ddp_children, register_resolvers, silence_noise

log = logging.getLogger("nnlab")
register_resolvers()
silence_noise()

# The repository's conf/. (Hydra resolves a relative config_path of a console script's module as
# a package resource, which the top-level conf/ is not, so main() hands Hydra the folder itself.)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def train(cfg: DictConfig) -> dict[str, float]:
    """The one path every task takes: build, fit, validate the final weights, test, write results.

    metrics.json is written however the run ends, with `status` saying how.
    """
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)  # Hydra makes it; the compose API does not
    with recording(run_dir, cfg.task_name) as record:
        run = record.run = build_run(cfg)
        trainer, task, datamodule = run.trainer, run.task, run.datamodule
        ckpt_path = check_checkpoint(cfg.ckpt_path) if cfg.get("ckpt_path") else None
        if trainer.is_global_zero:
            outputs.log_hparams(trainer.loggers, cfg, task.metric_names)
        prepare_ddp_children(trainer, run_dir, CONFIG_DIR)

        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
        record.metrics.update(latest_metrics(run))
        if trainer.limit_val_batches and task.last_validated_step != trainer.global_step:
            trainer.validate(task, datamodule=datamodule, verbose=False)  # the final weights'
            record.metrics.update(latest_metrics(run))
        record.metrics.update(test_and_analyse(run, run_dir))
    return record.metrics


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


@hydra.main(version_base="1.3", config_path=None, config_name="train")
def _hydra_main(cfg: DictConfig) -> dict[str, float]:
    try:
        return train(cfg)
    except RunStopped as error:
        log.error("%s", error)
        if is_multirun() or _full_error():
            raise  # a sweep's job fails alone; Hydra reports it once the sweep is done
        raise SystemExit(error.exit_code) from None


def preflight(arguments: list[str]) -> list[str]:
    """Check the command before Hydra runs it; return it, rewritten when it resumes a run."""
    flags = [a for a in arguments if a.startswith("-")]
    if set(flags) - {"-m", "--multirun"}:
        return arguments  # --help, --cfg, --info ...: Hydra's own business
    overrides = [a for a in arguments if not a.startswith("-")]
    multirun = bool(flags)
    cfg = compose_checked(CONFIG_DIR, first_job(overrides) if multirun else overrides)
    search = _override_value(overrides, "hparams_search")
    if search not in (None, "null") and not multirun:
        raise ConfigError("hparams_search", search, "a search runs its trials as a sweep: add -m")
    check_writable("paths.log_dir", str(cfg.paths.log_dir))
    if cfg.get("ckpt_path") is None:
        return arguments
    if multirun:
        raise ConfigError("ckpt_path", cfg.ckpt_path, "resume runs one at a time, without -m")
    return resume_overrides(overrides, cfg)


def _override_value(overrides: list[str], key: str) -> str | None:
    """The value the command line gives `key` (the last one wins, as in Hydra), or None."""
    values = [o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+") == key]
    return values[-1] if values else None


def main() -> None:
    if not (CONFIG_DIR / "train.yaml").is_file():
        sys.exit(f"nnlab: no configs at {CONFIG_DIR}; install nnlab with `pip install -e <repo>`")
    try:
        arguments = preflight(sys.argv[1:])
    except RunStopped as error:
        if _full_error():
            raise
        print(f"nnlab: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    sys.argv[1:] = ["--config-dir", str(CONFIG_DIR), *arguments]
    _hydra_main()


if __name__ == "__main__":
    # Run through the importable module, not __main__, so parallel sweep workers can unpickle the
    # task function (and register nnlab's config resolvers) by importing nnlab.train.
    from nnlab.train import main as importable_main

    importable_main()
