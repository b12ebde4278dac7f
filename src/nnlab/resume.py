"""`ckpt_path=last` (or a run dir, or a checkpoint file): resume an unfinished run in place.

The run continues in its own dir, so TensorBoard shows one run and metrics.json ends as the
run ends. Its config is its original command's overrides with the new command's on top, so
`nnlab-train experiment=wave ckpt_path=last` is all it takes; the new command's config is
saved beside the original, in .hydra/resumed/<stamp>/. A completed run is never resumed:
nothing a finished run wrote is overwritten.

This is the one step that comes before Hydra runs a command: which overrides to compose
depends on the run being resumed, which Hydra cannot express.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nnlab import checkpoints, layout
from nnlab.cli import compose_once
from nnlab.errors import ConfigError
from nnlab.overrides import command_line, key_of, quoted, values
from nnlab.runtime import run_stamp


def resume_arguments(arguments: list[str], config_dir: Path) -> list[str]:
    """`arguments`, rewritten to resume a run in place when they hold a `ckpt_path=`."""
    line = command_line(arguments)
    overrides = line.overrides
    if values(overrides).get("ckpt_path") in (None, "null"):
        return arguments
    if line.multirun:
        ckpt_path = values(overrides)["ckpt_path"]
        raise ConfigError("ckpt_path", ckpt_path, "resume runs one at a time, without -m")
    cfg = compose_once(config_dir, overrides)
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    run_dir, checkpoint = locate(str(cfg.ckpt_path), runs)
    original = yaml.safe_load(layout.saved_overrides_file(run_dir).read_text()) or []
    new = [o for o in overrides if key_of(o) != "ckpt_path"]
    replaced = {key_of(o) for o in new} | {"ckpt_path"}
    kept = [o for o in original if key_of(o) not in replaced]
    return [
        *line.flags,
        *kept,
        *new,
        f"ckpt_path={quoted(str(checkpoint))}",
        f"hydra.run.dir={quoted(str(run_dir))}",
        f"hydra.output_subdir={quoted(f'.hydra/resumed/{run_stamp()}')}",
    ]


def locate(value: str, runs: Path) -> tuple[Path, Path]:
    """The run dir and checkpoint that `ckpt_path=value` means, checked: an unfinished nnlab
    run whose last.ckpt reads weights-only."""
    if value == "last":
        candidates = (
            sorted(p.parent for p in runs.glob(f"*/{layout.HYDRA_DIR}")) if runs.is_dir() else []
        )
        if not candidates:
            raise ConfigError("ckpt_path", value, f"no runs to resume under {runs}")
        run_dir = candidates[-1]
        checkpoint = layout.checkpoint(run_dir, "last")
    else:
        path = Path(value).expanduser().resolve()
        run_dir, checkpoint = (
            (path, layout.checkpoint(path, "last")) if path.is_dir() else (path.parent.parent, path)
        )
    if not layout.is_run_dir(run_dir):
        raise ConfigError("ckpt_path", value, f"{run_dir} is not an nnlab run dir (no .hydra/)")
    if not checkpoint.is_file():
        raise ConfigError("ckpt_path", value, f"{checkpoint} does not exist: nothing to resume")
    checkpoints.read(checkpoint, "ckpt_path", mapped=True)
    if layout.read_metrics(run_dir).get("status") == "completed":
        raise ConfigError(
            "ckpt_path", value, f"{run_dir} completed; a finished run is never overwritten"
        )
    return run_dir, checkpoint


NOT_SETTINGS = ("ckpt_path", "hydra.", "paths.")  # where the run is, not how it trains
NOT_SET = object()


def check_resumable(task: Any, cfg: Any) -> int:
    """The step of the checkpoint `cfg.ckpt_path`, once its weights are found to fit `task`,
    the module this command built; else ConfigError naming the setting this command changed."""
    checkpoint = checkpoints.read(cfg.ckpt_path, "ckpt_path", mapped=True)
    difference = checkpoints.weights_difference(checkpoint["state_dict"], task.state_dict())
    if difference:
        raise refusal(cfg, difference)
    return int(checkpoint.get("global_step", 0))


def refusal(cfg: Any, reason: str) -> ConfigError:
    """Why the run cannot resume with this command's config, under the first setting the command
    changed from the run's own (the likely cause), else under ckpt_path."""
    left = "the run is left as it was: resume it with its own settings, or start a new run from "
    left += "its weights with init_from="
    run_dir = Path(cfg.paths.output_dir)
    original = values(yaml.safe_load(layout.saved_overrides_file(run_dir).read_text()) or [])
    changed = {
        key: value
        for key, value in _this_commands_settings().items()
        if not key.startswith(NOT_SETTINGS) and original.get(key, NOT_SET) != value
    }
    if not changed:
        return ConfigError("ckpt_path", str(cfg.ckpt_path), f"{reason}; {left}")
    key = min(changed, key=lambda key: key not in original)  # a changed value before a new key
    had = f"the run had {key}={original[key]}" if key in original else "the run did not set it"
    return ConfigError(key, changed[key], f"{had}; {reason}; {left}")


def _this_commands_settings() -> dict[str, Any]:
    """The overrides of the job under way, as Hydra keeps them ({} outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return values(list(HydraConfig.get().overrides.task)) if HydraConfig.initialized() else {}
