"""`nnlab-eval run_dir=RUN [ckpt=best|last|FILE] [key=value ...]`: test a trained run again.

    nnlab-eval run_dir=logs/fashion_cnn/runs/<stamp>
    nnlab-eval run_dir=logs/fashion_cnn/runs/<stamp> ckpt=last 'task.robustness={rotate: [10, 20]}'
    nnlab-eval run_dir=logs/mnist_mlp/runs/<stamp> data.test_subset=1000

The model and data are rebuilt from the run's own saved config (.hydra/config.yaml); the
key=value overrides change that config (another test set, other robustness settings) without
retyping the model. The checkpoint's weights are tested, and everything the run's test wrote
(metrics.json, figures, predictions, TensorBoard) goes to <run>/evals/<stamp>/: a finished
run's own files are never overwritten.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from nnlab.errors import NO_VALUE, ConfigError, RunStopped
from nnlab.preflight import parse
from nnlab.record import recording, test_and_analyse
from nnlab.resume import CHECKPOINT
from nnlab.run import build_run, check_checkpoint
from nnlab.runtime import register_resolvers, run_stamp, silence_noise

CHECKPOINTS = {"best": "best.ckpt", "last": "last.ckpt"}


def evaluate(
    run_dir: Path, ckpt: str = "best", overrides: list[str] | None = None
) -> dict[str, float]:
    """Test `run_dir`'s checkpoint with its own config (plus `overrides`); returns the metrics."""
    cfg = load_config(run_dir, overrides or [])
    checkpoint = locate_checkpoint(run_dir, ckpt)
    eval_dir = Path(cfg.paths.output_dir)
    eval_dir.mkdir(parents=True)
    with recording(eval_dir, f"eval of {run_dir.name}", f"; tested {checkpoint}") as record:
        record.run = build_run(cfg)
        record.metrics.update(test_and_analyse(record.run, eval_dir, checkpoint))
    return record.metrics


def load_config(run_dir: Path, overrides: list[str]) -> DictConfig:
    """The run's config, its outputs moved to a fresh evals/<stamp>/, `overrides` applied."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError("run_dir", str(run_dir), "not an nnlab run dir (no .hydra/config.yaml)")
    cfg = OmegaConf.load(saved)
    cfg.paths.output_dir = str(run_dir / "evals" / run_stamp())
    cfg.ckpt_path = None
    cfg.callbacks = {}  # testing saves no checkpoints
    # Testing needs one process: a DDP run's config would start more, each with its own eval.
    cfg.trainer.devices, cfg.trainer.num_nodes, cfg.trainer.strategy = 1, 1, "auto"
    OmegaConf.set_struct(cfg, True)  # overrides may change keys, not invent them
    for override in parse(overrides):
        key = override.get_key_element()
        if override.is_sweep_override() or key != key.lstrip("+~"):
            raise ConfigError(key, override.input_line, "expected key=value, one value")
        try:
            OmegaConf.update(cfg, key, override.value(), merge=False)
        except (ConfigKeyError, ConfigAttributeError):
            raise ConfigError(key, override.input_line, "not a key of the run's config") from None
    return cfg


def locate_checkpoint(run_dir: Path, ckpt: str) -> str:
    """best.ckpt (or last.ckpt when the run kept no best), last.ckpt, or a file."""
    folder = run_dir / CHECKPOINT.parent
    if ckpt in CHECKPOINTS:
        path = folder / CHECKPOINTS[ckpt]
        if ckpt == "best" and not path.is_file():
            path = folder / CHECKPOINTS["last"]
    else:
        path = Path(ckpt)
    return check_checkpoint(str(path), key="ckpt")


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    if not arguments or arguments[0] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if arguments else 2)
    register_resolvers()
    silence_noise()
    options, overrides = {}, []
    for argument in arguments:
        key, _, value = argument.partition("=")
        if key in ("run_dir", "ckpt"):
            options[key] = value
        else:
            overrides.append(argument)
    try:
        if "run_dir" not in options:
            raise ConfigError("run_dir", NO_VALUE, "name the run to evaluate: run_dir=<its folder>")
        evaluate(Path(options["run_dir"]), options.get("ckpt", "best"), overrides)
    except RunStopped as error:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"nnlab-eval: {error}", file=sys.stderr)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
