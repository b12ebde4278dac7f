"""`ckpt_path=last` (or a run dir, or a checkpoint file): resume an unfinished run in place.

The run continues in its own dir, so TensorBoard shows one run and metrics.json ends as the
run ends. Its config is its original command's overrides with the new command's on top, so
`nnlab-train experiment=wave ckpt_path=last` is all it takes; the new command's config is
saved beside the original, in .hydra/resumed/<stamp>/. A completed run is never resumed:
nothing a finished run wrote is overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import DictConfig

from nnlab.errors import ConfigError
from nnlab.run import check_checkpoint
from nnlab.runtime import quoted, run_stamp

CHECKPOINT = Path("checkpoints") / "last.ckpt"


def resume_overrides(overrides: list[str], cfg: DictConfig) -> list[str]:
    """The overrides that resume the run `cfg.ckpt_path` names, in its own run dir."""
    runs = Path(cfg.paths.log_dir) / cfg.task_name / "runs"
    run_dir, checkpoint = locate(cfg.ckpt_path, runs)
    original = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    new = [o for o in overrides if _key(o) != "ckpt_path"]
    replaced = {_key(o) for o in new} | {"ckpt_path"}
    kept = [o for o in original if _key(o) not in replaced]
    return [
        *kept,
        *new,
        f"ckpt_path={quoted(str(checkpoint))}",
        f"hydra.run.dir={quoted(str(run_dir))}",
        f"hydra.output_subdir={quoted(f'.hydra/resumed/{run_stamp()}')}",
    ]


def locate(value: str, runs: Path) -> tuple[Path, Path]:
    """The run dir and checkpoint that `ckpt_path=value` means."""
    if value == "last":
        candidates = sorted(p.parent for p in runs.glob("*/.hydra")) if runs.is_dir() else []
        if not candidates:
            raise ConfigError("ckpt_path", value, f"no runs to resume under {runs}")
        run_dir = candidates[-1]
        checkpoint = run_dir / CHECKPOINT
    else:
        path = Path(value).expanduser().resolve()
        run_dir, checkpoint = (
            (path, path / CHECKPOINT) if path.is_dir() else (path.parent.parent, path)
        )
    if not (run_dir / ".hydra").is_dir():
        raise ConfigError("ckpt_path", value, f"{run_dir} is not an nnlab run dir (no .hydra/)")
    if not checkpoint.is_file():
        raise ConfigError("ckpt_path", value, f"{checkpoint} does not exist: nothing to resume")
    check_checkpoint(str(checkpoint), key="ckpt_path")
    status = _status(run_dir)
    if status == "completed":
        raise ConfigError(
            "ckpt_path", value, f"{run_dir} completed; a finished run is never overwritten"
        )
    return run_dir, checkpoint


def _status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")
