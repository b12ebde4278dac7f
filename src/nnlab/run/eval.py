"""`nnlab-eval run_dir=RUN [ckpt=best|last|FILE] [key=value ...]`: test a trained run again.

    nnlab-eval run_dir=logs/fashion_cnn/runs/<stamp>
    nnlab-eval run_dir=logs/fashion_cnn/runs/<stamp> ckpt=last 'task.robustness={rotate: [10, 20]}'
    nnlab-eval run_dir=logs/mnist_mlp/runs/<stamp> data.test_subset=1000

The model and data are rebuilt from the run's config, composed again from the configs on disk
with the run's own overrides (a run dir is data: nnlab.run.resume.recomposed); the key=value
overrides change that config (another test set, other robustness settings) without retyping
the model, and a run of your own code needs its `hydra.searchpath=[...]` typed again. The
checkpoint's weights are tested, and everything the run's test wrote (metrics.json, figures,
predictions, TensorBoard) goes to <run>/evals/<stamp>/: a finished run's own files are never
overwritten.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from nnlab.checks import NO_VALUE
from nnlab.errors import ConfigError, exits
from nnlab.overrides import key_of, parse, value_of
from nnlab.run import layout
from nnlab.run.resume import recomposed, weights_file


def evaluate(
    run_dir: Path, ckpt: str = "best", overrides: list[str] | None = None
) -> dict[str, float]:
    """Test `run_dir`'s checkpoint with its own config (plus `overrides`); returns the metrics."""
    from nnlab.run.record import has_stage, recording, test_and_analyse
    from nnlab.run.resume import load_weights
    from nnlab.train import build_run

    run_dir = Path(run_dir)
    layout.check_no_links(run_dir, "run_dir", str(run_dir))
    eval_dir = run_dir / "evals" / layout.run_stamp()
    cfg = saved_config(run_dir, overrides or [], eval_dir)
    checkpoint = checkpoint_of(run_dir, ckpt)
    title, note = f"eval of {run_dir.name}", f"; tested {checkpoint}"
    with (
        layout.locked(run_dir, "run_dir"),
        _removed_if_refused(eval_dir),
        recording(eval_dir, cfg, title, note) as record,
    ):
        record.run = build_run(cfg)
        run = record.run
        if not has_stage(run.task, run.datamodule, "test_step", "test_dataloader") and not hasattr(
            run.task, "analyse"
        ):
            task = type(run.task).__name__
            reason = f"{task} has no test_step (or its data no test_dataloader): nothing to test"
            raise ConfigError("run_dir", str(run_dir), reason)
        load_weights(record.run.task, checkpoint, "ckpt")
        record.metrics.update(test_and_analyse(record.run, eval_dir))
    return record.metrics


@contextmanager
def _removed_if_refused(eval_dir: Path) -> Iterator[None]:
    """The eval's dir, made; removed again if the eval is refused as bad input (it tested
    nothing), kept with its metrics.json's `failed: ...` for anything else."""
    eval_dir.mkdir(parents=True)
    try:
        yield
    except ConfigError:
        shutil.rmtree(eval_dir, ignore_errors=True)
        raise


def saved_config(run_dir: Path, overrides: list[str], output_dir: Path) -> DictConfig:
    """The run's config (composed again from its overrides: nnlab.run.resume.recomposed) for
    one process with no checkpoints of its own, its outputs in `output_dir`, and `overrides`
    applied (changing keys that exist, not inventing them)."""
    saved = run_dir / layout.HYDRA_DIR / "config.yaml"
    if not saved.is_file():
        raise ConfigError("run_dir", str(run_dir), "not an nnlab run dir (no .hydra/config.yaml)")
    composed = [o for o in overrides if key_of(o).endswith(("hydra.searchpath", "_target_"))]
    overrides = [o for o in overrides if o not in composed]
    cfg = recomposed(run_dir, composed)
    with open_dict(cfg):
        if OmegaConf.select(cfg, "task_name", throw_on_resolution_failure=False) is None:
            cfg.task_name = layout.task_name_of(run_dir)  # the task's option named it
        cfg.paths.output_dir, cfg.ckpt_path, cfg.callbacks = str(output_dir), None, {}
        cfg.init_from = None  # the run's own weights are loaded instead
        # Testing needs one process: a DDP run's config would start more, each its own eval.
        cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.strategy = 1, 1, "auto"
    for override in parse(overrides):
        key = override.get_key_element()
        if override.is_sweep_override() or key != key.lstrip("+~"):
            raise ConfigError(key, override.input_line, "expected key=value, one value")
        try:
            OmegaConf.update(cfg, key, value_of(override), merge=False)
        except (ConfigKeyError, ConfigAttributeError):
            raise ConfigError(key, override.input_line, "not a key of the run's config") from None
    return cfg


def checkpoint_of(run_dir: Path, ckpt: str) -> Path:
    """best.ckpt (or last.ckpt when the run kept no best), last.ckpt, or a file."""
    if ckpt not in ("best", "last"):
        return Path(ckpt)
    return weights_file(str(run_dir), "ckpt", default=ckpt)


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if not arguments or arguments[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if arguments else 2)
    import nnlab.train  # noqa: F401 - nnlab's resolvers, for the saved config's loggers

    options = {
        k: v for k, _, v in (a.partition("=") for a in arguments) if k in ("run_dir", "ckpt")
    }
    overrides = [a for a in arguments if a.partition("=")[0] not in ("run_dir", "ckpt")]
    with exits("nnlab-eval"):
        if "run_dir" not in options:
            raise ConfigError("run_dir", NO_VALUE, "name the run to evaluate: run_dir=<its folder>")
        evaluate(Path(options["run_dir"]), options.get("ckpt", "best"), overrides)
